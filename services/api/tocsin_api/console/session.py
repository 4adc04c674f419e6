"""The console's session, CSRF tokens and form bodies (pure: no I/O).

A session is a sealed cookie: AES-256-GCM over a small JSON document holding the person's
credential (an API token or an OIDC ID token), its kind, the CSRF token and an expiry. GCM
both hides the credential and authenticates the cookie (a changed byte fails to open), so
nothing is kept server-side and any api replica opens any cookie. The key comes from the
console secret (docs/console.md); a different secret opens nothing.

The login in progress (OIDC state, nonce and PKCE verifier) is sealed the same way into a
second short-lived cookie, with its own purpose bound into the associated data so that one
kind of cookie can never be passed off as the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "tocsin_session"
LOGIN_COOKIE = "tocsin_login"
SESSION_LIFETIME_S = 12 * 3600
LOGIN_LIFETIME_S = 600
NONCE_BYTES = 12
# Form bodies the console accepts at most (every form here is a few hundred bytes).
MAX_FORM_FIELDS = 400


def derive_key(secret: str) -> bytes:
    """The cookie key: HMAC-SHA256 of a fixed label under the secret (a KDF for a secret
    that is already high-entropy), so the console key is never the secret itself."""
    if len(secret) < 16:
        raise ValueError("the console secret must have at least 16 characters")
    return hmac.new(secret.encode(), b"tocsin console session v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seal and open small JSON documents with AES-GCM; ``purpose`` is bound in."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, purpose: str, document: Mapping[str, Any]) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        data = json.dumps(document, separators=(",", ":")).encode()
        return _b64(nonce + self._aead.encrypt(nonce, data, purpose.encode()))

    def open(self, purpose: str, sealed: str) -> dict[str, Any] | None:
        """The document, or None for anything forged, truncated or of another purpose."""
        try:
            raw = _unb64(sealed)
            if len(raw) <= NONCE_BYTES:
                return None
            data = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
            document = json.loads(data)
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
        return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class Session:
    credential: str  # forwarded on every call, as the api forwards a bearer credential
    kind: str  # "token" or "oidc"
    csrf: str
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def new_session(credential: str, kind: str, now: float, lifetime_s: float) -> Session:
    return Session(credential, kind, secrets.token_urlsafe(32), now + lifetime_s)


def seal_session(sealer: Sealer, session: Session) -> str:
    return sealer.seal(SESSION_COOKIE, asdict(session))


def open_session(sealer: Sealer, cookie: str | None, now: float) -> Session | None:
    if not cookie:
        return None
    doc = sealer.open(SESSION_COOKIE, cookie)
    if doc is None:
        return None
    try:
        session = Session(
            credential=str(doc["credential"]),
            kind=str(doc["kind"]),
            csrf=str(doc["csrf"]),
            expires_at=float(doc["expires_at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return None if session.expired(now) or not session.credential else session


def csrf_ok(expected: str, given: str | None) -> bool:
    """Whether a form's CSRF token is the session's (constant time)."""
    return bool(expected) and given is not None and hmac.compare_digest(expected, given)


def looks_like_token(text: str) -> bool:
    """A pasted API token: ``tocsin_`` and then something."""
    return text.startswith("tocsin_") and len(text) > len("tocsin_") and text.isprintable()


class FormError(ValueError):
    """A form body that is not one; ``str()`` says why."""


def parse_form(body: bytes, content_type: str) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body as lists of values per field."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise FormError(
            f"expected a form (application/x-www-form-urlencoded), not {content_type!r}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("the form is not UTF-8") from None
    try:
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError as e:
        raise FormError(f"the form has too many fields ({e})") from None
    return fields


def safe_next(target: str | None, default: str = "/console/") -> str:
    """Where to go after signing in: a path of the console only (never another site)."""
    if not target or not target.startswith("/console/") or target.startswith("//"):
        return default
    if "\\" in target or any(c in target for c in "\r\n"):
        return default
    return target
