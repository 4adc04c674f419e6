"""Exactly-once paging in effect: one claim per idempotency key in Redis.

A key is claimed before sending (SET NX with a lease) and marked delivered after; a
redelivered or replayed request finds the mark and pages nobody.
"""

from __future__ import annotations

from enum import StrEnum

from redis.asyncio import Redis

_DELIVERED_TTL = 30 * 24 * 3600
# Renewed before each attempt; after a crash, the next worker waits at most this long.
_LEASE_TTL = 30


class Claim(StrEnum):
    ACQUIRED = "acquired"
    DELIVERED = "delivered"  # sent before: a duplicate
    IN_FLIGHT = "in-flight"  # another worker holds the lease


class IdempotencyStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def _key(idempotency_key: str) -> str:
        return f"tocsin:page:{idempotency_key}"

    async def claim(self, idempotency_key: str) -> Claim:
        key = self._key(idempotency_key)
        if await self._redis.set(key, b"sending", nx=True, ex=_LEASE_TTL):
            return Claim.ACQUIRED
        state = await self._redis.get(key)
        return Claim.DELIVERED if state == b"delivered" else Claim.IN_FLIGHT

    async def delivered(self, idempotency_key: str) -> None:
        await self._redis.set(self._key(idempotency_key), b"delivered", ex=_DELIVERED_TTL)

    async def renew(self, idempotency_key: str) -> None:
        """Extend the lease while a held or retried page is still ours to send."""
        await self._redis.set(self._key(idempotency_key), b"sending", ex=_LEASE_TTL, xx=True)

    async def release(self, idempotency_key: str) -> None:
        """Give the claim back after a failed attempt, so a retry may send."""
        await self._redis.delete(self._key(idempotency_key))
