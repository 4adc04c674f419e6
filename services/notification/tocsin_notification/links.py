"""Signed, expiring acknowledge/resolve links (pure logic).

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact
JSON {"a": action, "i": incident id, "s": service id, "u": user id, "e": expiry (unix s)}
and the signature is HMAC-SHA256(secret, payload). Changing any byte breaks the signature;
an expired token is refused even when correctly signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

ACTIONS = ("acknowledge", "resolve")


class LinkProblem(StrEnum):
    TAMPERED = "tampered"  # malformed or signature mismatch -> 403
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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, secret: bytes, ttl: timedelta) -> None:
        if not secret:
            raise ValueError("a link signing secret is required")
        # Keyed once: a copy per token skips hashing the key's pads again (two per page).
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self.ttl = ttl

    def _mac(self, payload: str) -> str:
        mac = self._keyed.copy()
        mac.update(payload.encode())
        return _b64(mac.digest())

    def token(
        self, action: str, incident_id: str, service_id: str, user_id: str, now: datetime
    ) -> str:
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: expected one of {ACTIONS}")
        claim = {
            "a": action,
            "i": incident_id,
            "s": service_id,
            "u": user_id,
            "e": int((now + self.ttl).timestamp()),
        }
        payload = _b64(json.dumps(claim, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, now: datetime) -> LinkClaim:
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            raise LinkError(LinkProblem.TAMPERED, "the link is incomplete")
        if not hmac.compare_digest(
            self._mac(payload).encode(), signature.encode("utf-8", "replace")
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
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise LinkError(LinkProblem.TAMPERED, "the link cannot be read") from None
        if claim.action not in ACTIONS:
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
    ) -> str:
        token = self.token(action, incident_id, service_id, user_id, now)
        return f"{public_url.rstrip('/')}/v1/links/{token}"
