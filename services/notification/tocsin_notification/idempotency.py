"""Exactly-once paging in effect: one claim per idempotency key in Redis.

A key is claimed before sending (SET NX with a lease) and marked delivered after; a
redelivered or replayed request finds the mark and pages nobody.

The lease's value names the process that holds it. A page this process claimed and then
dropped with an error (Redis or Kafka failed under it) is taken back at once when its
record is retried, instead of waiting for its own lease to run out.

Renewing and releasing compare the lease first (one Lua script each): a page held here
longer than its lease (in a bundle, behind a rate limit) may have been claimed and sent by
another worker after a rebalance, and a blind SET XX would have written this process's
lease over that worker's lease or over its "delivered" mark, and sent the page again (the
failure suite caught a bundle of 118 pages sent twice that way).

Commands go through a `CommandBatcher`, so the claims of many pages share one round trip.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from tocsin_notification.redis_batch import CommandBatcher, Commands, raise_failed

DELIVERED_TTL_S = 30 * 24 * 3600
# Renewed before an attempt once a third of it has passed; after a crash, the next worker
# waits at most this long.
LEASE_TTL_S = 30
DELIVERED = b"delivered"
_SENDING = b"sending"

# KEYS[1] the page's key; ARGV[1] this process's lease, ARGV[2] the lease's TTL.
# 1: the lease is this process's (extended, or taken again after it ran out with nobody
# else claiming it); 0: another worker holds it or the page is delivered.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] or not held then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""
# Deletes the key only while it holds this process's lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(Exception):
    """A page's lease ran out while this process held it and another worker claimed or
    sent it: this process must not send it. Its record is retried, and finds the other
    worker's outcome."""


class Claim(StrEnum):
    ACQUIRED = "acquired"
    DELIVERED = "delivered"  # sent before: a duplicate
    IN_FLIGHT = "in-flight"  # another worker holds the lease


def lease_value(owner: str) -> bytes:
    return _SENDING + b":" + owner.encode()


def classify(previous: bytes | None, own_lease: bytes, held_here: bool) -> Claim:
    """What a SET NX GET answer means (pure).

    `previous` is the key's value before the SET (None: it was free, so it is ours now),
    `own_lease` this process's lease value, `held_here` whether a page of this process is
    working on the key right now."""
    if previous is None:
        return Claim.ACQUIRED
    if previous == DELIVERED:
        return Claim.DELIVERED
    if previous == own_lease and not held_here:
        return Claim.ACQUIRED  # ours, left behind by an attempt that failed here
    return Claim.IN_FLIGHT


def lease_due(taken_at: float | None, now: float, ttl_s: float = LEASE_TTL_S) -> bool:
    """Whether a lease taken at `taken_at` should be renewed before the next attempt (pure)."""
    return taken_at is None or now - taken_at >= ttl_s / 3


class IdempotencyStore:
    def __init__(
        self,
        batcher: CommandBatcher,
        owner: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batcher = batcher
        self._lease = lease_value(owner or f"{os.getpid()}-{secrets.token_hex(4)}")
        self._monotonic = monotonic
        self._held: dict[str, float] = {}  # key -> when its lease was last taken or renewed

    @staticmethod
    def _key(idempotency_key: str) -> str:
        return f"tocsin:page:{idempotency_key}"

    async def claim(self, idempotency_key: str) -> Claim:
        claim, _ = await self.claim_with(idempotency_key, None)
        return claim

    async def claim_with(
        self, idempotency_key: str, also: Commands | None
    ) -> tuple[Claim, list[Any]]:
        """`claim`, with `also`'s commands in the same batch entry (one round trip); their
        results come back as they are, a failed one as its error object."""
        key = self._key(idempotency_key)
        lease = self._lease

        def commands(pipe: Any) -> None:
            pipe.set(key, lease, nx=True, ex=LEASE_TTL_S, get=True)
            if also is not None:
                also(pipe)

        results = await self._batcher.submit(commands)
        (previous,) = raise_failed(results[:1])
        return await self._claimed(idempotency_key, key, previous), results[1:]

    async def _claimed(self, idempotency_key: str, key: str, previous: Any) -> Claim:
        lease = self._lease
        claim = classify(previous, lease, idempotency_key in self._held)
        if claim is Claim.ACQUIRED:
            self._held[idempotency_key] = self._monotonic()
            if previous is not None and not await self._extend(key):  # taken back
                self._held.pop(idempotency_key, None)
                return Claim.IN_FLIGHT
        return claim

    async def _extend(self, key: str) -> bool:
        lease = self._lease
        (ours,) = await self._batcher.run(
            lambda pipe: pipe.eval(_RENEW, 1, key, lease, LEASE_TTL_S)
        )
        return bool(ours)

    async def renew(self, idempotency_key: str) -> bool:
        """Extend the lease while a held or retried page is still ours to send (a lease
        taken less than a third of its time ago is left as it is). False: the lease ran
        out and another worker claimed the page, or sent it — this process must not."""
        now = self._monotonic()
        if not lease_due(self._held.get(idempotency_key), now):
            return True
        if not await self._extend(self._key(idempotency_key)):
            self._held.pop(idempotency_key, None)
            return False
        self._held[idempotency_key] = now
        return True

    async def delivered(self, idempotency_key: str) -> None:
        self.settled(await self.delivered_soon([idempotency_key]), [idempotency_key])

    def delivered_soon(self, idempotency_keys: list[str]) -> asyncio.Future[list[Any]]:
        """Queue the delivered marks of these keys, in one batch entry; `settled` after."""
        keys = [self._key(k) for k in idempotency_keys]

        def commands(pipe: Any) -> None:
            for key in keys:
                pipe.set(key, DELIVERED, ex=DELIVERED_TTL_S)

        return self._batcher.submit(commands)

    def settled(self, results: list[Any], idempotency_keys: list[str]) -> None:
        """The marks' results: raises the first failure; else the keys are no longer held."""
        raise_failed(results)
        for idempotency_key in idempotency_keys:
            self._held.pop(idempotency_key, None)

    async def release(self, idempotency_key: str) -> None:
        """Give the claim back after a failed delivery, so a later replay may send."""
        key = self._key(idempotency_key)
        lease = self._lease
        await self._batcher.run(lambda pipe: pipe.eval(_RELEASE, 1, key, lease))
        self._held.pop(idempotency_key, None)

    def forget(self, idempotency_key: str) -> None:
        """This process stopped working on the key without an outcome (an error): its lease
        stays in Redis, and a retry of the record here may take it back at once."""
        self._held.pop(idempotency_key, None)

    def held(self, idempotency_key: str) -> bool:
        return idempotency_key in self._held
