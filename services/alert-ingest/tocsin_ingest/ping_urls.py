"""Heartbeat ping URLs: a per-monitor secret in the URL, kept only as its SHA-256 (pure).

A monitor is pinged at ``<public URL>/v1/heartbeats/<id>/ping/<secret>``. The secret is
``hbs_`` followed by 43 URL-safe characters (256 random bits): the prefix lets secret
scanners and people recognise one, the randomness makes a fast hash enough to keep at rest
(there is nothing to brute-force), as for API tokens (tocsin_common.auth.tokens). The
secret is returned once, when issued; the store keeps its SHA-256, when and by whom it was
issued, and, during a rotation's overlap, the previous secret's SHA-256 with the moment it
stops working.

A monitor whose URL was never issued cannot be pinged. An unknown monitor, a monitor
without a URL and a wrong secret are refused alike, and the comparison is constant-time
and made even when nothing is stored, so neither ids nor secrets can be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

SECRET_PREFIX = "hbs_"
_RANDOM_BYTES = 32
MAX_PREVIOUS_VALID = timedelta(days=7)
PING_PATH = "/v1/heartbeats/{id}/ping/{secret}"
# What a wrong guess is compared against when nothing is stored: the work is the same.
_NOTHING = hashlib.sha256(b"no ping URL issued").hexdigest()
_SECRET_SHAPE = re.compile(r"^hbs_[A-Za-z0-9_-]{43}$")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def looks_like_secret(text: str) -> bool:
    return bool(_SECRET_SHAPE.match(text))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ping_url(base: str, heartbeat_id: str, secret: str) -> str:
    """The full ping URL of ``heartbeat_id`` under alert-ingest's public ``base``."""
    path = PING_PATH.format(id=quote(heartbeat_id, safe=""), secret=secret)
    return base.rstrip("/") + path


@dataclass(frozen=True)
class PingSecret:
    """What is kept of a monitor's ping URL: hashes and times, never the secret."""

    digest: str
    issued_at: datetime
    issued_by: str
    previous_digest: str = ""
    previous_until: datetime | None = None  # the previous URL works until then

    def previous_live(self, now: datetime) -> bool:
        return bool(self.previous_digest) and (
            self.previous_until is not None and now < self.previous_until
        )

    def to_redis(self) -> dict[str | bytes, str | bytes]:
        return {
            "digest": self.digest,
            "issued_at": repr(self.issued_at.timestamp()),
            "issued_by": self.issued_by,
            "previous_digest": self.previous_digest,
            "previous_until": (
                repr(self.previous_until.timestamp()) if self.previous_until else ""
            ),
        }

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> PingSecret:
        def text(name: str) -> str:
            value = raw.get(name.encode(), raw.get(name, b""))
            return value.decode() if isinstance(value, bytes) else str(value)

        def when(name: str) -> datetime | None:
            value = text(name)
            return datetime.fromtimestamp(float(value), UTC) if value else None

        issued_at = when("issued_at")
        assert issued_at is not None
        return cls(
            digest=text("digest"),
            issued_at=issued_at,
            issued_by=text("issued_by"),
            previous_digest=text("previous_digest"),
            previous_until=when("previous_until"),
        )


def accepts(stored: PingSecret | None, secret: str, now: datetime) -> bool:
    """Whether ``secret`` opens the monitor whose ping URL is ``stored`` (None: never
    issued). Constant-time in the secret, and as much work when nothing is stored."""
    given = secret_hash(secret)
    current = stored.digest if stored is not None else _NOTHING
    ok = hmac.compare_digest(given, current)
    previous = (
        stored.previous_digest if stored is not None and stored.previous_live(now) else _NOTHING
    )
    ok_previous = hmac.compare_digest(given, previous)
    return stored is not None and looks_like_secret(secret) and (ok or ok_previous)


def rotated(
    current: PingSecret | None,
    secret: str,
    now: datetime,
    issued_by: str,
    previous_valid_for: timedelta = timedelta(0),
) -> PingSecret:
    """The record of a newly issued ``secret``: the URL before it keeps working for
    ``previous_valid_for`` (zero: it stops at once)."""
    keep = current is not None and previous_valid_for > timedelta(0)
    return PingSecret(
        digest=secret_hash(secret),
        issued_at=now,
        issued_by=issued_by,
        previous_digest=current.digest if keep and current is not None else "",
        previous_until=now + previous_valid_for if keep else None,
    )


def previous_valid_for_problem(value: timedelta) -> str | None:
    """What is wrong with a requested overlap, or None."""
    if value < timedelta(0):
        return "previous_valid_for: must not be negative"
    if value > MAX_PREVIOUS_VALID:
        return f"previous_valid_for: must be at most {MAX_PREVIOUS_VALID.days} days"
    return None


class PingSecretStore(Protocol):
    """Where ping URLs' hashes are kept (Redis: redis_state.RedisPingSecrets)."""

    async def get(self, heartbeat_id: str) -> PingSecret | None:
        """The monitor's ping URL record; None when none was issued."""

    async def put(self, heartbeat_id: str, record: PingSecret) -> None:
        """Replace the monitor's record (a rotation)."""
