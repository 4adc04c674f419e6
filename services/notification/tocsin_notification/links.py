"""Signed, expiring links, their key ring, and what a link may do: acknowledge/resolve in
pages, approve/reject in the messages that ask for an automation action's approval.

A token is `<kid>.<payload>.<signature>`: `kid` names the key that signed it, the payload
is base64url (no padding) of compact JSON {"a": action, "i": incident id, "s": service id,
"u": user id, "e": expiry (unix s)} (an approve/reject link adds "r": the automation
rule's id), and the signature is base64url of
HMAC-SHA256(key, "<kid>.<payload>"). Changing any byte breaks the signature; an expired
token is refused even when correctly signed.

The keys form a ring (`kid:secret,kid:secret,...`): the first signs new links, every key
verifies, so a rotation that keeps the previous key (new first, old second) keeps the links
already sent working until the old key is taken out of the ring ("retired"). A single
secret is a ring of one whose kid is derived from the secret (`derived_kid`).

Everything here is pure except `key_ring_from_env`, which reads the variables (and a file
one of them names) through `tocsin_common.secrets`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tocsin.v1 import incident_pb2
from tocsin_common.secrets import SecretError, check_secret, read_secret

INCIDENT_ACTIONS = ("acknowledge", "resolve")
APPROVAL_ACTIONS = ("approve", "reject")
ACTIONS = INCIDENT_ACTIONS + APPROVAL_ACTIONS
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class LinkProblem(StrEnum):
    TAMPERED = "tampered"  # malformed or signature mismatch -> 403
    UNKNOWN_KEY = "unknown_key"  # signed with a key not (or no longer) in the ring -> 403
    EXPIRED = "expired"  # correctly signed, past its expiry -> 410


class LinkError(Exception):
    def __init__(self, problem: LinkProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class LinkClaim:
    action: str
    incident_id: str
    service_id: str
    user_id: str
    expires_at: int
    kid: str = ""
    rule_id: str = ""  # approve/reject: the automation rule whose action waits

    @property
    def decides_approval(self) -> bool:
        return self.action in APPROVAL_ACTIONS


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the key ring ---------------------------------------------------------------------------


def derived_kid(secret: bytes) -> str:
    """The kid of a lone secret (TOCSIN_LINK_SECRET): the first 12 hex digits of its
    SHA-256, so `printf %s "$TOCSIN_LINK_SECRET" | sha256sum | cut -c1-12` prints it."""
    return hashlib.sha256(secret).hexdigest()[:12]


@dataclass(frozen=True)
class LinkKey:
    kid: str
    secret: bytes = b""

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"LinkKey(kid={self.kid!r})"


@dataclass(frozen=True)
class KeyRing:
    """Signing keys, current first. Build with `parse_key_ring` or `KeyRing.single`."""

    keys: tuple[LinkKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        kids = [k.kid for k in self.keys]
        for key in self.keys:
            if not KID_RE.fullmatch(key.kid):
                raise ValueError(f"kid {key.kid!r}: 1-32 of A-Z a-z 0-9 _ -")
            if not key.secret:
                raise ValueError(f"kid {key.kid!r}: the secret is empty")
            if kids.count(key.kid) > 1:
                raise ValueError(f"kid {key.kid!r}: appears twice in the ring")

    @classmethod
    def single(cls, secret: bytes) -> KeyRing:
        return cls((LinkKey(derived_kid(secret), secret),))

    @property
    def current(self) -> LinkKey:
        return self.keys[0]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in self.keys)


def parse_key_ring(text: str, name: str = "TOCSIN_LINK_KEYS") -> KeyRing:
    """`kid:secret,kid:secret,...` (first = current) as a KeyRing; SecretError naming
    `name`, the entry and the problem when an entry is malformed, a placeholder or short."""
    keys: list[LinkKey] = []
    seen: set[str] = set()
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        kid, colon, secret = entry.partition(":")
        kid, secret = kid.strip(), secret.strip()
        if not colon or not kid:
            raise SecretError(f"{name}: entry {position} is not 'kid:secret'")
        if not KID_RE.fullmatch(kid):
            raise SecretError(
                f"{name}: entry {position}: kid {kid!r} must be 1-32 of A-Z a-z 0-9 _ -"
            )
        if kid in seen:
            raise SecretError(f"{name}: kid {kid!r} appears twice")
        seen.add(kid)
        check_secret(f"{name} (kid {kid})", secret)
        keys.append(LinkKey(kid, secret.encode()))
    return KeyRing(tuple(keys))


def key_ring_from_env(
    keys_env: str = "TOCSIN_LINK_KEYS",
    secret_env: str = "TOCSIN_LINK_SECRET",
    env: Mapping[str, str] | None = None,
) -> KeyRing:
    """The ring from `$keys_env` (or its _FILE), else the lone secret `$secret_env` (or its
    _FILE) as a ring of one. Neither, or both: SecretError naming the variables."""
    # The ring's own entries are checked one by one (length, placeholders) by the parser.
    ring_text = read_secret(keys_env, env, required=False, min_bytes=1)
    secret = read_secret(secret_env, env, required=False)
    if ring_text is not None and secret is not None:
        raise SecretError(
            f"{keys_env} and {secret_env} are both set; set one (to keep links signed with "
            f"{secret_env} working, put it in {keys_env} as "
            f"'{derived_kid(secret.encode())}:<that secret>')"
        )
    if ring_text is not None:
        return parse_key_ring(ring_text, keys_env)
    if secret is not None:
        return KeyRing.single(secret.encode())
    raise SecretError(
        f"{keys_env}: required to sign acknowledge/resolve links: set {keys_env} (or "
        f"{keys_env}_FILE) to 'kid:secret[,kid:secret...]', or {secret_env} (or "
        f"{secret_env}_FILE) to one secret of at least 32 bytes"
    )


# --- tokens ---------------------------------------------------------------------------------


class LinkSigner:
    def __init__(self, ring: KeyRing, ttl: timedelta) -> None:
        self.ring = ring
        # Keyed once: a copy per token skips hashing the key's pads again (two per page).
        self._keyed = {k.kid: hmac.new(k.secret, digestmod=hashlib.sha256) for k in ring.keys}
        self.ttl = ttl

    def _mac(self, kid: str, payload: str) -> str:
        mac = self._keyed[kid].copy()
        mac.update(f"{kid}.{payload}".encode())
        return _b64(mac.digest())

    def token(
        self,
        action: str,
        incident_id: str,
        service_id: str,
        user_id: str,
        now: datetime,
        rule_id: str = "",
        valid_until: datetime | None = None,
    ) -> str:
        """``valid_until``: an instant the link must still work at (an approval's own
        expiry, which ``approval_ttl`` may set beyond ``ttl``); the link lives until the later
        of it and now + ttl."""
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: expected one of {ACTIONS}")
        if (action in APPROVAL_ACTIONS) != bool(rule_id):
            raise ValueError(f"rule_id: an {action} link needs one, and only such a link")
        claim: dict[str, str | int] = {
            "a": action,
            "i": incident_id,
            "s": service_id,
            "u": user_id,
            "e": int(max(now + self.ttl, valid_until or now).timestamp()),
        }
        if rule_id:
            claim["r"] = rule_id
        payload = _b64(json.dumps(claim, separators=(",", ":"), sort_keys=True).encode())
        kid = self.ring.current.kid
        return f"{kid}.{payload}.{self._mac(kid, payload)}"

    def verify(self, token: str, now: datetime) -> LinkClaim:
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise LinkError(LinkProblem.TAMPERED, "the link is incomplete")
        kid, payload, signature = parts
        if kid not in self._keyed:
            raise LinkError(
                LinkProblem.UNKNOWN_KEY, "the link was signed with a key that is not in use"
            )
        if not hmac.compare_digest(
            self._mac(kid, payload).encode(), signature.encode("utf-8", "replace")
        ):
            raise LinkError(LinkProblem.TAMPERED, "the link's signature does not match")
        try:
            data = json.loads(_unb64(payload))
            claim = LinkClaim(
                action=str(data["a"]),
                incident_id=str(data["i"]),
                service_id=str(data["s"]),
                user_id=str(data["u"]),
                expires_at=int(data["e"]),
                kid=kid,
                rule_id=str(data.get("r", "")),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise LinkError(LinkProblem.TAMPERED, "the link cannot be read") from None
        if claim.action not in ACTIONS or claim.decides_approval != bool(claim.rule_id):
            raise LinkError(LinkProblem.TAMPERED, "the link names an unknown action")
        if now.timestamp() >= claim.expires_at:
            raise LinkError(LinkProblem.EXPIRED, "the link has expired")
        return claim

    def url(
        self,
        public_url: str,
        action: str,
        incident_id: str,
        service_id: str,
        user_id: str,
        now: datetime,
        rule_id: str = "",
        valid_until: datetime | None = None,
    ) -> str:
        token = self.token(action, incident_id, service_id, user_id, now, rule_id, valid_until)
        return f"{public_url.rstrip('/')}/v1/links/{token}"


# --- what a link may do ---------------------------------------------------------------------

STATE_NAMES: dict[int, str] = {
    incident_pb2.INCIDENT_STATUS_TRIGGERED: "triggered",
    incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED: "acknowledged",
    incident_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
}
# How far along an incident is; an action is moot once the incident is at (or past) the
# state the action leads to. An unknown state (UNSPECIFIED) is not past anything: the
# command goes to escalation, which decides.
_PROGRESS: dict[int, int] = {
    incident_pb2.INCIDENT_STATUS_TRIGGERED: 1,
    incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED: 2,
    incident_pb2.INCIDENT_STATUS_RESOLVED: 3,
}
_LEADS_TO = {"acknowledge": 2, "resolve": 3}


class LinkOutcome(StrEnum):
    ACT = "act"  # send the command
    MOOT = "moot"  # already there (or past): 409 with the state, change nothing


def link_outcome(action: str, status: int) -> LinkOutcome:
    """What an acknowledge/resolve link does to an incident in `status` (an
    IncidentStatus)."""
    if action not in _LEADS_TO:
        raise ValueError(f"action {action!r}: expected one of {ACTIONS}")
    if _PROGRESS.get(status, 0) >= _LEADS_TO[action]:
        return LinkOutcome.MOOT
    return LinkOutcome.ACT


def approval_outcome(states: list[str]) -> LinkOutcome:
    """What an approve/reject link does, given the states of its rule's firings on the
    incident (as of now): acts while one is pending, else it is moot (decided or expired:
    409, nothing changes)."""
    return LinkOutcome.ACT if "pending" in states else LinkOutcome.MOOT
