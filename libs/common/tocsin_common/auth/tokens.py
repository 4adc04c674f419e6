"""API tokens: high-entropy secrets with a recognisable prefix, kept only as a hash.

A token is ``tocsin_`` followed by 43 URL-safe characters (256 random bits). The prefix lets
secret scanners and people recognise one; the randomness makes a fast hash (SHA-256) enough
to keep at rest, as GitHub and PagerDuty do for API keys: there is nothing to brute-force.
The secret is returned once, at creation; Redis holds

- ``tocsin:auth:token:<sha256>``: a hash with the token's id, subject, scope, name, times;
- ``tocsin:auth:token-id:<id>``: the sha256, so a token can be revoked by its id;
- ``tocsin:auth:tokens:<subject>``: the ids of a subject's tokens (a set).

Each key expires with the token. Revocation deletes the first two, so the next call made
with the token finds nothing: verification reads Redis on every call, with no cache.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from tocsin_common.auth.policy import PrincipalKind, Role

TOKEN_PREFIX = "tocsin_"
_RANDOM_BYTES = 32
DEFAULT_TTL = timedelta(days=90)
MAX_TTL = timedelta(days=366)
LAST_USED_RESOLUTION_S = 60  # last_used_at is written at most once a minute per token

_TOKEN_KEY = "tocsin:auth:token:"
_ID_KEY = "tocsin:auth:token-id:"
_SUBJECT_KEY = "tocsin:auth:tokens:"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def looks_like_token(text: str) -> bool:
    return text.startswith(TOKEN_PREFIX) and 40 <= len(text) <= 80


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    subject_id: str
    subject_kind: PrincipalKind
    name: str
    scope: Role
    created_at: datetime
    expires_at: datetime
    created_by: str
    last_used_at: datetime | None = None

    def to_redis(self) -> dict[str | bytes, str | bytes]:
        return {
            "token_id": self.token_id,
            "subject_id": self.subject_id,
            "subject_kind": str(int(self.subject_kind)),
            "name": self.name,
            "scope": str(int(self.scope)),
            "created_at": str(self.created_at.timestamp()),
            "expires_at": str(self.expires_at.timestamp()),
            "created_by": self.created_by,
        }

    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> TokenRecord:
        def text(name: str) -> str:
            return _s(raw.get(name.encode(), b""))

        def when(name: str) -> datetime | None:
            value = text(name)
            return datetime.fromtimestamp(float(value), UTC) if value else None

        created, expires = when("created_at"), when("expires_at")
        assert created is not None and expires is not None
        return cls(
            token_id=text("token_id"),
            subject_id=text("subject_id"),
            subject_kind=PrincipalKind(int(text("subject_kind"))),
            name=text("name"),
            scope=Role(int(text("scope"))),
            created_at=created,
            expires_at=expires,
            created_by=text("created_by"),
            last_used_at=when("last_used_at"),
        )


class TokenStore:
    """Tokens in Redis (see the module's docstring for the keys)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(
        self,
        *,
        subject_id: str,
        subject_kind: PrincipalKind,
        name: str,
        scope: Role,
        ttl: timedelta,
        created_by: str,
        now: datetime,
    ) -> tuple[str, TokenRecord]:
        """A new token (the secret, shown once) and its record."""
        token = new_token()
        digest = token_hash(token)
        record = TokenRecord(
            token_id="tok_" + secrets.token_hex(8),
            subject_id=subject_id,
            subject_kind=subject_kind,
            name=name,
            scope=scope,
            created_at=now,
            expires_at=now + ttl,
            created_by=created_by,
        )
        expire_at = int(record.expires_at.timestamp()) + 1
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_TOKEN_KEY + digest, mapping=record.to_redis())  # type: ignore[arg-type]
            pipe.expireat(_TOKEN_KEY + digest, expire_at)
            pipe.set(_ID_KEY + record.token_id, digest, exat=expire_at)
            pipe.sadd(_SUBJECT_KEY + subject_id, record.token_id)
            await pipe.execute()
        return token, record

    async def verify(self, token: str, now: datetime) -> TokenRecord | None:
        """The live record of ``token``; None when unknown, revoked or expired."""
        if not looks_like_token(token):
            return None
        key = _TOKEN_KEY + token_hash(token)
        raw = await self._redis.hgetall(key)
        if not raw:
            return None
        record = TokenRecord.from_redis(raw)
        if record.expires_at <= now:
            return None
        last = record.last_used_at
        if last is None or (now - last).total_seconds() >= LAST_USED_RESOLUTION_S:
            await self._redis.hset(key, "last_used_at", str(now.timestamp()))
        return record

    async def get(self, token_id: str) -> TokenRecord | None:
        digest = await self._redis.get(_ID_KEY + token_id)
        if digest is None:
            return None
        raw = await self._redis.hgetall(_TOKEN_KEY + _s(digest))
        return TokenRecord.from_redis(raw) if raw else None

    async def revoke(self, token_id: str) -> bool:
        digest = await self._redis.get(_ID_KEY + token_id)
        if digest is None:
            return False
        raw = await self._redis.hgetall(_TOKEN_KEY + _s(digest))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_TOKEN_KEY + _s(digest), _ID_KEY + token_id)
            if raw:
                subject = _s(raw.get(b"subject_id", b""))
                pipe.srem(_SUBJECT_KEY + subject, token_id)
            await pipe.execute()
        return True

    async def list(self, subject_id: str | None) -> list[TokenRecord]:
        """The live tokens of ``subject_id`` (every subject's with None), oldest first."""
        if subject_id is None:
            subjects = [
                _s(key)[len(_SUBJECT_KEY) :]
                async for key in self._redis.scan_iter(match=_SUBJECT_KEY + "*", count=500)
            ]
        else:
            subjects = [subject_id]
        records: list[TokenRecord] = []
        for subject in subjects:
            ids = [_s(i) for i in await self._redis.smembers(_SUBJECT_KEY + subject)]
            for token_id in ids:
                record = await self.get(token_id)
                if record is None:  # expired: forget its id
                    await self._redis.srem(_SUBJECT_KEY + subject, token_id)
                else:
                    records.append(record)
        return sorted(records, key=lambda r: r.created_at)
