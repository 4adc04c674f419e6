"""Requests per token per minute, counted in Redis so the limit holds across api replicas.

A fixed one-minute window per token (the principal's id without one): one EVAL counts the
request and sets the window's expiry. Over the limit: 429 with Retry-After, the seconds
until the window ends. :func:`verdict` is the pure decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

WINDOW_S = 60

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int  # 0 when allowed
    remaining: int


def window_of(now: float, window_s: int = WINDOW_S) -> int:
    return int(now // window_s)


def verdict(count: int, limit: int, now: float, window_s: int = WINDOW_S) -> Verdict:
    """Whether the ``count``-th request of the window starting before ``now`` may pass."""
    if count <= limit:
        return Verdict(True, 0, limit - count)
    window_end = (window_of(now, window_s) + 1) * window_s
    return Verdict(False, max(1, math.ceil(window_end - now)), 0)


class RateLimiter:
    def __init__(self, redis: Redis, limit_per_minute: int) -> None:
        self._redis = redis
        self._limit = limit_per_minute
        self._script = redis.register_script(_COUNT)

    @property
    def limit(self) -> int:
        return self._limit

    async def hit(self, key: str, now: float) -> Verdict:
        window = window_of(now)
        count = int(
            await self._script(keys=[f"tocsin:api:rate:{key}:{window}"], args=[WINDOW_S * 2])
        )
        return verdict(count, self._limit, now)
