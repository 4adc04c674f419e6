"""Rate limits kept in Redis per person and contact method: the logic of merging what Redis
holds, and `RedisRateLimitLog` over an in-memory stand-in for Redis's sorted sets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tocsin.v1 import notification_pb2
from tocsin_common.clock import FakeClock
from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.job import Job
from tocsin_notification.pipeline.ratelimit_stage import RateLimitStage
from tocsin_notification.ratelimit import SlidingWindowLimit, from_micros, to_micros
from tocsin_notification.ratelimit_store import _RECORD, PREFIX, RedisRateLimitLog

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class SortedSets:
    """The few sorted-set commands the log uses, on dicts; expiry is recorded, not run."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, float]] = {}
        self.ttl_ms: dict[str, int] = {}
        self.fail = False

    def zadd(self, key: str, mapping: dict[str, int]) -> int:
        self.sets.setdefault(key, {}).update({m: float(s) for m, s in mapping.items()})
        return len(mapping)

    @staticmethod
    def _bound(raw: str | int, low: bool) -> Callable[[float], bool]:
        text = str(raw)
        if text in ("-inf", "+inf"):
            return lambda s: True
        if text.startswith("("):
            v = float(text[1:])
            return (lambda s: s > v) if low else (lambda s: s < v)
        v = float(text)
        return (lambda s: s >= v) if low else (lambda s: s <= v)

    def zrangebyscore(self, key: str, lo: str, hi: str, withscores: bool) -> list[Any]:
        above, below = self._bound(lo, True), self._bound(hi, False)
        rows = sorted(
            ((m.encode(), s) for m, s in self.sets.get(key, {}).items() if above(s) and below(s)),
            key=lambda r: r[1],
        )
        return rows if withscores else [m for m, _ in rows]

    def zremrangebyscore(self, key: str, lo: str, hi: int) -> int:
        above, below = self._bound(lo, True), self._bound(hi, False)
        members = self.sets.get(key, {})
        gone = [m for m, s in members.items() if above(s) and below(s)]
        for m in gone:
            del members[m]
        return len(gone)

    def pexpire(self, key: str, ms: int) -> bool:
        self.ttl_ms[key] = ms
        return True

    def eval(self, script: str, numkeys: int, key: str, *args: Any) -> int:
        """The record script, checked to be the three commands it stands for."""
        assert numkeys == 1
        assert script == _RECORD
        score, member, trim_to, expire_ms = args
        self.zadd(key, {member: score})
        self.zremrangebyscore(key, "-inf", trim_to)
        return int(self.pexpire(key, expire_ms))


class FakeBatcher:
    """CommandBatcher's contract: `commands(pipe)` run, their results returned in order."""

    def __init__(self, redis: SortedSets) -> None:
        self.redis = redis
        self.runs = 0

    async def run(self, commands: Callable[[Any], Any]) -> list[Any]:
        return await self.submit(commands)

    def submit(self, commands: Callable[[Any], Any]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._run(commands))
        except ConnectionError as away:
            future.set_exception(away)
        return future

    def _run(self, commands: Callable[[Any], Any]) -> list[Any]:
        self.runs += 1
        if self.redis.fail:
            raise ConnectionError("redis is away")
        results: list[Any] = []

        class Pipe:
            def __getattr__(_, name: str) -> Callable[..., None]:
                method = getattr(self.redis, name)
                return lambda *a, **kw: results.append(method(*a, **kw))

        commands(Pipe())
        return results


def replica(redis: SortedSets, limit: int = 2, window_s: float = 60) -> RedisRateLimitLog:
    return RedisRateLimitLog(FakeBatcher(redis), SlidingWindowLimit(limit, window_s))  # type: ignore[arg-type]


def test_micros_round_trip_exactly() -> None:
    assert from_micros(to_micros(T0)) == T0
    assert to_micros(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000
    assert to_micros(T0) < 2**53  # exact as a Redis score (a double)


def test_merge_counts_a_send_known_here_and_in_redis_once() -> None:
    limit = SlidingWindowLimit(limit=3, window_s=60)
    limit.record("k", T0)
    limit.merge("k", [T0, T0 + timedelta(seconds=1)], T0 + timedelta(seconds=2))
    # T0 known on both sides counts once; two in the window of three: not limited
    assert limit.next_allowed("k", T0 + timedelta(seconds=2)) == T0 + timedelta(seconds=2)
    limit.merge("k", [T0 + timedelta(seconds=1), T0 + timedelta(seconds=1)], T0)
    # two sends at the same microsecond (two replicas) count twice: now limited
    assert limit.next_allowed("k", T0 + timedelta(seconds=2)) == T0 + timedelta(seconds=60)


def test_merge_ignores_sends_outside_the_window() -> None:
    limit = SlidingWindowLimit(limit=1, window_s=60)
    now = T0 + timedelta(seconds=60)
    limit.merge("k", [T0], now)  # exactly one window ago: out
    assert limit.next_allowed("k", now) == now
    assert limit.keys() == 1  # kept (empty), dropped by forget_idle
    limit.forget_idle(now)
    assert limit.keys() == 0


async def test_a_restarted_replica_keeps_the_limit() -> None:
    redis = SortedSets()
    first = replica(redis)
    await first.record("alice/sms", T0)
    await first.record("alice/sms", T0 + timedelta(seconds=10))
    # A new process (restart, or the replica that takes the partition over) knows nothing...
    second = replica(redis)
    now = T0 + timedelta(seconds=20)
    assert second.limit.next_allowed("alice/sms", now) == now
    await second.refresh("alice/sms", now)  # ... until it asks Redis
    assert second.limit.next_allowed("alice/sms", now) == T0 + timedelta(seconds=60)
    await second.refresh("bob/sms", now)  # per person and contact method
    assert second.limit.next_allowed("bob/sms", now) == now
    assert second.limit.next_allowed("alice/email", now) == now


async def test_redis_holds_one_window_and_expires_after_it() -> None:
    redis = SortedSets()
    log = replica(redis, limit=5, window_s=60)
    for s in (0, 30, 61, 62):
        await log.record("k", T0 + timedelta(seconds=s))
    key = PREFIX + "k"
    kept = sorted(int(v) for v in redis.sets[key].values())
    assert kept == [to_micros(T0 + timedelta(seconds=s)) for s in (30, 61, 62)]
    assert len(redis.sets[key]) == 3 and len(set(redis.sets[key])) == 3  # unique members
    assert redis.ttl_ms[key] == 61_000


async def test_recording_is_best_effort_when_redis_is_away() -> None:
    redis = SortedSets()
    redis.fail = True
    await replica(redis).record("k", T0)  # logged, not raised: the message still goes
    with pytest.raises(ConnectionError):
        await replica(redis).refresh("k", T0)  # a decision needs Redis, as the claim does


def _job(incident: str) -> Job:
    return Job(
        notification_pb2.NotificationRequest(
            idempotency_key=f"{incident}:1:0:alice:0", user_id="alice", contact_method_id="sms"
        )
    )


async def test_stages_share_the_limit_through_redis() -> None:
    """Replica A sends two messages (its limit) to alice's SMS; replica B, fresh, holds the
    next page until the window frees, and records the send it then makes."""
    redis = SortedSets()
    clock = FakeClock()
    sent: list[tuple[str, list[str]]] = []

    def stages(name: str) -> tuple[RateLimitStage, BundleStage]:
        log = replica(redis, limit=2, window_s=60)
        policy = BundlePolicy(log.limit, window_s=0)
        return RateLimitStage(policy, log), BundleStage(policy, clock, log)

    def sender(name: str) -> Callable[[list[Job]], Any]:
        async def send(jobs: list[Job]) -> None:
            sent.append((name, [j.request.idempotency_key.split(":")[0] for j in jobs]))

        return send

    a_limit, a_bundle = stages("a")
    for incident in ("i1", "i2"):
        assert await a_limit.limited_until("alice/sms", clock.now()) is None
        assert await a_bundle.submit(_job(incident), sender("a")) is False
        clock.advance(1)
    b_limit, b_bundle = stages("b")
    until = await b_limit.limited_until("alice/sms", clock.now())
    assert until is not None and until == clock.now() + timedelta(seconds=58)
    assert await b_bundle.submit(_job("i3"), sender("b")) is True  # held
    clock.advance(58)
    for _ in range(10):
        await asyncio.sleep(0)
    assert sent == [("a", ["i1"]), ("a", ["i2"]), ("b", ["i3"])]
    # B's send is kept too; i1's, a window old now, was trimmed by it
    kept = sorted(int(v) for v in redis.sets[PREFIX + "alice/sms"].values())
    assert kept == [to_micros(clock.now() - timedelta(seconds=59)), to_micros(clock.now())]
