"""The rate limit's sends, per person and contact method, kept in Redis.

``tocsin:ratelimit:<user>/<contact method>`` is a sorted set: one member per message sent
(``<micros>:<owner>:<n>``, unique across replicas), scored by its send time in integer
microseconds since the epoch. It holds one window: older members are trimmed on every
write and the key expires a window after the last one.

Before a page's rate limit is decided, `refresh` reads the window from Redis and merges it
into the process's own `SlidingWindowLimit`; `record` writes a send while its message
goes. Both go through the `CommandBatcher`, so the pages of one event-loop turn share one
round trip. Recording is best effort: with Redis away the message still goes (the
idempotency claim, not the rate limit, is what must not be lost) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
from datetime import datetime
from typing import Any

from tocsin_notification.ratelimit import SlidingWindowLimit, from_micros, to_micros
from tocsin_notification.redis_batch import CommandBatcher, Commands, raise_failed

log = logging.getLogger("tocsin.notification.ratelimit")

PREFIX = "tocsin:ratelimit:"

# KEYS[1] the set; ARGV: score, member, trim up to this score, expiry (ms). Sent as EVAL
# with the text (see tocsin_escalation.pipelining): Redis compiles a script text once.
_RECORD = (
    "redis.call('ZADD',KEYS[1],ARGV[1],ARGV[2]) "
    "redis.call('ZREMRANGEBYSCORE',KEYS[1],'-inf',ARGV[3]) "
    "return redis.call('PEXPIRE',KEYS[1],ARGV[4])"
)


class RedisRateLimitLog:
    def __init__(
        self, batcher: CommandBatcher, limit: SlidingWindowLimit, owner: str | None = None
    ) -> None:
        self._batcher = batcher
        self.limit = limit
        self._owner = owner or f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = itertools.count()
        self._window_us = to_micros(from_micros(0) + limit.window)

    @staticmethod
    def redis_key(key: str) -> str:
        return PREFIX + key

    async def refresh(self, key: str, now: datetime) -> None:
        """Merge the sends Redis holds for `key` within the window into the limit."""
        self.merge(key, now, await self._batcher.run(self.read_commands(key, now)))

    def read_commands(self, key: str, now: datetime) -> Commands:
        """The read of `refresh`, to ride in another caller's batch entry; its one result
        goes to `merge`."""
        rkey = self.redis_key(key)
        since = f"({to_micros(now) - self._window_us}"

        def commands(pipe: Any) -> None:
            pipe.zrangebyscore(rkey, since, "+inf", withscores=True)

        return commands

    def merge(self, key: str, now: datetime, results: list[Any]) -> None:
        (rows,) = raise_failed(results)
        if rows:
            self.limit.merge(key, (from_micros(int(score)) for _, score in rows), now)

    async def record(self, key: str, at: datetime) -> None:
        """Keep a send of `key` at `at` in Redis (best effort, never raises)."""
        await self.settle(key, self.record_soon(key, at))

    def record_soon(self, key: str, at: datetime) -> asyncio.Future[list[Any]]:
        """Queue the write of a send of `key` at `at`; `settle` awaits it."""
        rkey = self.redis_key(key)
        micros = to_micros(at)
        member = f"{micros}:{self._owner}:{next(self._seq)}"
        window_us = self._window_us

        expire_ms = window_us // 1000 + 1000

        def commands(pipe: Any) -> None:
            # One command, not three: the page's hot path pays per command sent and parsed.
            pipe.eval(_RECORD, 1, rkey, micros, member, micros - window_us, expire_ms)

        return self._batcher.submit(commands)

    async def settle(self, key: str, written: asyncio.Future[list[Any]]) -> None:
        """Wait for a `record_soon` write; a failure is logged (best effort, never raises)."""
        try:
            raise_failed(await written)
        except Exception:
            log.warning("could not keep a send of %s in Redis", key, exc_info=True)
