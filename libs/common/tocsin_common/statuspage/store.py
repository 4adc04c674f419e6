"""The status page's subscriptions in Redis (a thin repository over ``subscriptions``):
one hash, ``tocsin:status:subscriptions``, subscription id -> JSON (tokens only as their
SHA-256 digests). The api writes it (REST, the confirm and unsubscribe links);
notification reads it to fan updates out and to check a subscriber before each send."""

from __future__ import annotations

import logging
from typing import Any

from .subscriptions import Subscription, SubscriptionError, decode, encode

SUBSCRIPTIONS_KEY = "tocsin:status:subscriptions"
# Write only over one that is still there: a link must not bring back a deleted one.
_REPLACE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

log = logging.getLogger("tocsin.statuspage")


class RedisSubscriptions:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def get(self, subscription_id: str) -> Subscription | None:
        raw = await self._redis.hget(SUBSCRIPTIONS_KEY, subscription_id)
        return _decoded(raw) if raw is not None else None

    async def all(self) -> list[Subscription]:
        found = []
        for raw in (await self._redis.hgetall(SUBSCRIPTIONS_KEY)).values():
            sub = _decoded(raw)
            if sub is not None:
                found.append(sub)
        return sorted(found, key=lambda s: (s.created_at, s.subscription_id))

    async def count(self) -> int:
        return int(await self._redis.hlen(SUBSCRIPTIONS_KEY))

    async def put(self, sub: Subscription) -> None:
        await self._redis.hset(SUBSCRIPTIONS_KEY, sub.subscription_id, encode(sub))

    async def replace(self, sub: Subscription) -> bool:
        """Store a changed subscription unless it was deleted meanwhile (False then)."""
        done = await self._redis.eval(
            _REPLACE, 1, SUBSCRIPTIONS_KEY, sub.subscription_id, encode(sub)
        )
        return bool(done)

    async def delete(self, subscription_id: str) -> bool:
        return bool(await self._redis.hdel(SUBSCRIPTIONS_KEY, subscription_id))


def _decoded(raw: bytes | str) -> Subscription | None:
    try:
        return decode(raw)
    except SubscriptionError:
        log.warning("skipping an unreadable stored subscription", exc_info=True)
        return None
