"""Durable timers: a store in Redis and the loop that fires what is due.

Layout (scores and due times are integer milliseconds since the epoch):

- ``tocsin:timers:due``            sorted set: timer id -> due time (or lease expiry)
- ``tocsin:timers:payload``        hash: timer id -> payload (bytes)
- ``tocsin:timers:group:<group>``  set of the timer ids of one group (an incident), to
  cancel them together

A timer id is ``<group>|<rest>``. Scheduling an id that exists replaces it (same id, new
due time and payload), so scheduling is idempotent.

Guarantees:

- **Claimed once.** A Lua script takes up to ``batch`` due timers and, in the same atomic
  step, moves each to ``now + lease``: another replica polling at the same moment cannot
  see them. Only a timer whose owner died before acknowledging it comes due again, after
  the lease.
- **Effect before delete.** The loop runs the handler (which produces to Kafka) and only
  then acknowledges; the acknowledgement deletes the timer only if its score is still the
  lease it was claimed with (a timer rescheduled meanwhile survives). A crash in between
  re-fires the timer after the lease rather than losing it; the handler's effects are
  idempotent downstream.
- **On time.** The loop polls every ``poll_interval`` (default 100 ms) and, while whole
  batches come back, claims again at once, so a backlog drains at batch speed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from tocsin_common.clock import Clock

from tocsin_escalation.pipelining import queue_script

log = logging.getLogger("tocsin.escalation.timers")

DUE_KEY = "tocsin:timers:due"
PAYLOAD_KEY = "tocsin:timers:payload"
GROUP_PREFIX = "tocsin:timers:group:"


@dataclass(frozen=True)
class Timer:
    timer_id: str
    due_ms: int
    payload: bytes


@dataclass(frozen=True)
class ClaimedTimer:
    timer_id: str
    payload: bytes
    lease_ms: int  # the score it holds while claimed; acknowledging checks it


def group_of(timer_id: str) -> str:
    return timer_id.split("|", 1)[0]


def to_ms(epoch_seconds: float) -> int:
    return round(epoch_seconds * 1000)


class TimerStore(Protocol):
    async def schedule(self, timers: Sequence[Timer]) -> None: ...

    async def cancel_group(self, group: str) -> int: ...

    async def claim_due(self, now_ms: int, batch: int, lease_ms: int) -> list[ClaimedTimer]: ...

    async def ack(self, claimed: Sequence[ClaimedTimer]) -> int: ...

    async def pending(self) -> int: ...


_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""

_ACK = """
local done = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    local group = string.match(id, '^([^|]*)')
    redis.call('SREM', ARGV[1] .. group, id)
    done = done + 1
  end
end
return done
"""

_CANCEL = """
local ids = redis.call('SMEMBERS', KEYS[3])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
redis.call('DEL', KEYS[3])
return #ids
"""


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class RedisTimerStore:
    """The durable timer store (see the module docstring for layout and guarantees)."""

    def __init__(self, redis: Redis, prefix: str = "") -> None:
        self._redis = redis
        self._due = prefix + DUE_KEY
        self._payload = prefix + PAYLOAD_KEY
        self._group = prefix + GROUP_PREFIX
        self._claim = redis.register_script(_CLAIM)
        self._ack = redis.register_script(_ACK)
        self._cancel = redis.register_script(_CANCEL)

    async def schedule(self, timers: Sequence[Timer]) -> None:
        if not timers:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            self.queue_schedule(pipe, timers)
            await pipe.execute()

    def queue_schedule(self, pipe: Pipeline, timers: Sequence[Timer]) -> None:
        """Queue :meth:`schedule` on a pipeline (to share a round trip with other writes)."""
        for timer in timers:
            pipe.hset(self._payload, timer.timer_id, timer.payload)
            pipe.zadd(self._due, {timer.timer_id: timer.due_ms})
            pipe.sadd(self._group + group_of(timer.timer_id), timer.timer_id)

    async def cancel_group(self, group: str) -> int:
        result = await self._cancel(keys=[self._due, self._payload, self._group + group])
        return int(result)

    def queue_cancel_group(self, pipe: Pipeline, group: str) -> None:
        """Queue :meth:`cancel_group` on a pipeline."""
        queue_script(pipe, self._cancel, [self._due, self._payload, self._group + group], [])

    async def claim_due(self, now_ms: int, batch: int, lease_ms: int) -> list[ClaimedTimer]:
        lease = now_ms + lease_ms
        raw = await self._claim(keys=[self._due, self._payload], args=[now_ms, batch, lease])
        return [
            ClaimedTimer(_b(raw[i]).decode(), _b(raw[i + 1]), lease) for i in range(0, len(raw), 2)
        ]

    async def ack(self, claimed: Sequence[ClaimedTimer]) -> int:
        if not claimed:
            return 0
        args: list[str | int] = [self._group]
        for c in claimed:
            args += [c.timer_id, c.lease_ms]
        return int(await self._ack(keys=[self._due, self._payload], args=args))

    async def pending(self) -> int:
        return int(await self._redis.zcard(self._due))


class InMemoryTimerStore:
    """The same contract in memory, for unit tests of the logic around the store."""

    def __init__(self) -> None:
        self.due: dict[str, int] = {}
        self.payloads: dict[str, bytes] = {}
        self.groups: dict[str, set[str]] = {}

    async def schedule(self, timers: Sequence[Timer]) -> None:
        for timer in timers:
            self.due[timer.timer_id] = timer.due_ms
            self.payloads[timer.timer_id] = timer.payload
            self.groups.setdefault(group_of(timer.timer_id), set()).add(timer.timer_id)

    async def cancel_group(self, group: str) -> int:
        ids = self.groups.pop(group, set())
        for timer_id in ids:
            self.due.pop(timer_id, None)
            self.payloads.pop(timer_id, None)
        return len(ids)

    async def claim_due(self, now_ms: int, batch: int, lease_ms: int) -> list[ClaimedTimer]:
        ready = sorted((due, tid) for tid, due in self.due.items() if due <= now_ms)[:batch]
        claimed = []
        for _, timer_id in ready:
            self.due[timer_id] = now_ms + lease_ms
            claimed.append(
                ClaimedTimer(timer_id, self.payloads.get(timer_id, b""), now_ms + lease_ms)
            )
        return claimed

    async def ack(self, claimed: Sequence[ClaimedTimer]) -> int:
        done = 0
        for c in claimed:
            if self.due.get(c.timer_id) == c.lease_ms:
                del self.due[c.timer_id]
                self.payloads.pop(c.timer_id, None)
                self.groups.get(group_of(c.timer_id), set()).discard(c.timer_id)
                done += 1
        return done

    async def pending(self) -> int:
        return len(self.due)


TimerHandler = Callable[[ClaimedTimer], Awaitable[None]]


class TimerLoop:
    """Claims due timers in batches and fires them: handler first, acknowledgement after."""

    def __init__(
        self,
        store: TimerStore,
        clock: Clock,
        handler: TimerHandler,
        *,
        poll_interval: float = 0.1,
        batch: int = 1000,
        lease_s: float = 30.0,
        concurrency: int = 200,
    ) -> None:
        self._store = store
        self._clock = clock
        self._handler = handler
        self._poll = poll_interval
        self._batch = batch
        self._lease_ms = int(lease_s * 1000)
        self._limit = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self.fired = 0
        self.failed = 0

    def stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> int:
        """Claim and fire one batch; the number claimed."""
        now_ms = to_ms(self._clock.now().timestamp())
        claimed = await self._store.claim_due(now_ms, self._batch, self._lease_ms)
        if not claimed:
            return 0
        results = await asyncio.gather(*(self._fire(c) for c in claimed))
        # Only fired timers are acknowledged; a failed one comes due again after its lease.
        await self._store.ack([c for c, ok in zip(claimed, results, strict=True) if ok])
        return len(claimed)

    async def _fire(self, claimed: ClaimedTimer) -> bool:
        async with self._limit:
            try:
                await self._handler(claimed)
            except Exception:
                self.failed += 1
                log.exception(
                    "timer failed; it fires again after its lease",
                    extra={"timer_id": claimed.timer_id},
                )
                return False
            self.fired += 1
            return True

    async def run(self) -> None:
        backoff = self._poll
        while not self._stopping.is_set():
            try:
                claimed = await self.tick()
                backoff = self._poll
            except (ConnectionError, OSError, TimeoutError) as error:
                log.warning("timer store unavailable: %s", error)
                claimed = 0
                backoff = min(backoff * 2, 2.0)
            except Exception as error:  # redis errors and the like: keep the loop alive
                log.exception("timer loop error: %s", error)
                claimed = 0
                backoff = min(backoff * 2, 2.0)
            if claimed < self._batch:
                await self._clock.sleep(backoff)
