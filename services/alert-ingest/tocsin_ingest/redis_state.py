"""Redis adapters of alert-ingest's shared state: rate-limit counters, heartbeat deadlines
and the hashes of heartbeat ping URLs. Each operation is one Lua script or one command, so
it is atomic across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from tocsin_common.clock import Clock

from tocsin_ingest import ratelimit
from tocsin_ingest.heartbeats import MonitorStatus
from tocsin_ingest.ping_urls import PingSecret

log = logging.getLogger("tocsin.ingest.redis")

# KEYS: current window counter, previous window counter.
# ARGV: cost, events wanted (the lease), limit, elapsed seconds in the window, window seconds.
# Mirrors ratelimit.grant(); counts what it grants; returns {granted, current, previous}
# (counts before this call). Granted 0: the request does not fit.
_RATE_LIMIT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local cost = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local elapsed = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local weight = 1 - elapsed / window
if weight < 0 then weight = 0 end
local rate = previous * weight + current
local room = math.floor(limit - rate + 1e-9)
local granted = 0
if cost <= room then
  granted = math.min(math.max(want, cost), room)
elseif rate <= 0 then
  granted = cost
end
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], math.ceil(window * 2) + 1)
end
return {granted, current, previous}
"""


class RedisRateLimiter:
    """Sliding-window counters per integration key (see ratelimit for the arithmetic),
    admitted from leases: one Lua call per lease of ``ratelimit.lease_size(limit)`` events,
    not per request. Concurrent requests of one key wait for one lease call between them."""

    def __init__(
        self, redis: Redis, clock: Clock, window_s: float = ratelimit.WINDOW_SECONDS
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._window_s = window_s
        self._script = redis.register_script(_RATE_LIMIT)
        self._budget = ratelimit.LocalBudget()
        self._leasing: dict[str, asyncio.Lock] = {}

    async def admit(self, key: str, limit: int, cost: int) -> ratelimit.Decision:
        window = ratelimit.window_at(self._clock.now().timestamp(), self._window_s)
        if self._budget.take(key, window.index, cost):
            return ratelimit.Decision(True, 0, limit, self._budget.left(key, window.index))
        lock = self._leasing.get(key)
        if lock is None:
            lock = self._leasing[key] = asyncio.Lock()
        async with lock:
            # Another request may have leased while this one waited.
            window = ratelimit.window_at(self._clock.now().timestamp(), self._window_s)
            if self._budget.take(key, window.index, cost):
                return ratelimit.Decision(True, 0, limit, self._budget.left(key, window.index))
            return await self._lease(key, limit, cost, window)

    async def _lease(
        self, key: str, limit: int, cost: int, window: ratelimit.Window
    ) -> ratelimit.Decision:
        current_key, previous_key = ratelimit.window_keys(key, window)
        want = ratelimit.wanted(limit, cost)
        try:
            reply: Any = await self._script(
                keys=[current_key, previous_key],
                args=[cost, want, limit, repr(window.elapsed), repr(self._window_s)],
            )
        except RedisError:
            # Failing open: an incident tool must not drop alerts because Redis is down.
            log.exception("rate limiter unavailable; admitting", extra={"key": key[:6]})
            return ratelimit.Decision(True, 0, limit, limit)
        granted, current, previous = (int(x) for x in reply)
        if granted:
            self._budget.add(key, window.index, granted - cost)
            return ratelimit.Decision(True, 0, limit, self._budget.left(key, window.index))
        return ratelimit.Decision(
            False,
            ratelimit.retry_after(previous, current, cost, limit, window.elapsed, self._window_s),
            limit,
            0,
        )


# KEYS: deadlines (sorted set: monitor -> deadline), down (set of monitors whose alert
# fires), last pings (hash: monitor -> time of its last ping)
_ARM = """
for i = 1, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i])
  end
end
return 0
"""
_PING = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return redis.call('SREM', KEYS[2], ARGV[1])
"""
# ARGV[1]: now; ARGV[2]: the claim's lease (its new deadline); ARGV[3..]: the monitors
# this replica knows (others are left alone).
_CLAIM = """
local known = {}
for i = 3, #ARGV do known[ARGV[i]] = true end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local claimed = {}
for _, id in ipairs(expired) do
  if known[id] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    redis.call('SADD', KEYS[2], id)
    table.insert(claimed, id)
  end
end
return claimed
"""
# ARGV[1]: monitor; ARGV[2]: the claim's lease. A ping since the claim set another deadline.
_CONFIRM = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
_UNCLAIM = """
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 0
"""
_MARK_DOWN = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 0
"""


class RedisHeartbeatStore:
    """Heartbeat deadlines in a sorted set; monitors whose alert fires in a set; last pings
    in a hash."""

    def __init__(self, redis: Redis, prefix: str = "tocsin:ingest:heartbeats") -> None:
        self._redis = redis
        self._keys = [f"{prefix}:deadlines", f"{prefix}:down", f"{prefix}:last-ping"]
        self._arm = redis.register_script(_ARM)
        self._ping = redis.register_script(_PING)
        self._claim = redis.register_script(_CLAIM)
        self._confirm = redis.register_script(_CONFIRM)
        self._unclaim = redis.register_script(_UNCLAIM)
        self._mark_down = redis.register_script(_MARK_DOWN)

    async def arm(self, deadlines: dict[str, float]) -> None:
        args: list[str] = []
        for monitor_id, deadline in deadlines.items():
            args += [monitor_id, repr(deadline)]
        if args:
            await self._arm(keys=self._keys, args=args)

    async def ping(self, monitor_id: str, deadline: float, at: float) -> bool:
        reply = await self._ping(keys=self._keys, args=[monitor_id, repr(deadline), repr(at)])
        return int(reply) == 1

    async def status(self, monitor_ids: Iterable[str]) -> dict[str, MonitorStatus]:
        ids = list(monitor_ids)
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._keys[2], ids)
            pipe.smismember(self._keys[1], ids)
            last, down = await pipe.execute()
        return {
            monitor_id: MonitorStatus(
                datetime.fromtimestamp(float(at), UTC) if at is not None else None,
                bool(is_down),
            )
            for monitor_id, at, is_down in zip(ids, last, down, strict=True)
        }

    async def claim_expired(
        self, now: float, known: Iterable[str], lease_until: float
    ) -> list[str]:
        reply: Any = await self._claim(keys=self._keys, args=[repr(now), repr(lease_until), *known])
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply]

    async def confirm(self, monitor_id: str, lease_until: float) -> None:
        await self._confirm(keys=self._keys, args=[monitor_id, repr(lease_until)])

    async def unclaim(self, monitor_id: str, deadline: float) -> None:
        await self._unclaim(keys=self._keys, args=[monitor_id, repr(deadline)])

    async def mark_down(self, monitor_id: str) -> None:
        await self._mark_down(keys=self._keys, args=[monitor_id])


class RedisPingSecrets:
    """The hashes of heartbeat ping URLs: one Redis hash per monitor (ping_urls.PingSecret's
    fields); never a secret."""

    def __init__(self, redis: Redis, prefix: str = "tocsin:ingest:heartbeats:ping-url:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, heartbeat_id: str) -> PingSecret | None:
        raw = await self._redis.hgetall(self._prefix + heartbeat_id)
        return PingSecret.from_redis(raw) if raw else None

    async def put(self, heartbeat_id: str, record: PingSecret) -> None:
        key = self._prefix + heartbeat_id
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=record.to_redis())  # type: ignore[arg-type]
            await pipe.execute()
