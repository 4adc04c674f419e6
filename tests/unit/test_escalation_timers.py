"""Unit tests of the timer claim logic and the timer loop, on the in-memory store (the Redis
store runs the same contract in Lua; the integration stories and bench/timers_bench.py
exercise it for real)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tocsin_common.clock import FakeClock
from tocsin_escalation.timers import ClaimedTimer, InMemoryTimerStore, Timer, TimerLoop, to_ms

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def ms(seconds: float) -> int:
    return to_ms((T0 + timedelta(seconds=seconds)).timestamp())


async def test_only_due_timers_are_claimed_in_due_order_and_in_batches() -> None:
    store = InMemoryTimerStore()
    await store.schedule([Timer(f"i|{n}", ms(n), b"%d" % n) for n in (3, 1, 2, 10)])
    first = await store.claim_due(ms(5), batch=2, lease_ms=30_000)
    assert [c.timer_id for c in first] == ["i|1", "i|2"]
    second = await store.claim_due(ms(5), batch=2, lease_ms=30_000)
    assert [c.timer_id for c in second] == ["i|3"]  # claimed ones are leased away
    assert await store.claim_due(ms(5), batch=2, lease_ms=30_000) == []


async def test_an_unacknowledged_claim_comes_back_after_its_lease() -> None:
    store = InMemoryTimerStore()
    await store.schedule([Timer("i|a", ms(0), b"x")])
    [claimed] = await store.claim_due(ms(0), 10, 30_000)
    assert await store.claim_due(ms(29), 10, 30_000) == []
    [again] = await store.claim_due(ms(30), 10, 30_000)
    assert again.timer_id == "i|a"
    assert await store.ack([claimed]) == 0  # the old lease no longer holds it
    assert await store.ack([again]) == 1
    assert await store.pending() == 0


async def test_a_timer_rescheduled_while_claimed_survives_the_ack() -> None:
    store = InMemoryTimerStore()
    await store.schedule([Timer("i|a", ms(0), b"old")])
    [claimed] = await store.claim_due(ms(0), 10, 30_000)
    await store.schedule([Timer("i|a", ms(60), b"new")])
    assert await store.ack([claimed]) == 0
    [later] = await store.claim_due(ms(60), 10, 30_000)
    assert later.payload == b"new"


async def test_cancel_group_removes_only_that_incidents_timers() -> None:
    store = InMemoryTimerStore()
    await store.schedule(
        [Timer("inc1|a", ms(1), b""), Timer("inc1|b", ms(2), b""), Timer("inc2|a", ms(1), b"")]
    )
    assert await store.cancel_group("inc1") == 2
    assert [c.timer_id for c in await store.claim_due(ms(10), 10, 1000)] == ["inc2|a"]


async def test_the_loop_fires_each_due_timer_once_and_acks_it_after_the_effect() -> None:
    clock = FakeClock(T0)
    store = InMemoryTimerStore()
    fired: list[tuple[str, float]] = []

    async def handler(claimed: ClaimedTimer) -> None:
        # The effect happens while the timer is still in the store (acked only after).
        assert claimed.timer_id in store.due
        fired.append((claimed.timer_id, (clock.now() - T0).total_seconds()))

    loop = TimerLoop(store, clock, handler, batch=2)
    await store.schedule([Timer(f"i|{n}", ms(n), b"") for n in (1, 2, 3)])
    assert await loop.tick() == 0
    clock.advance(2)
    assert await loop.tick() == 2
    assert await loop.tick() == 0
    clock.advance(5)
    assert await loop.tick() == 1
    assert fired == [("i|1", 2), ("i|2", 2), ("i|3", 7)]
    assert await store.pending() == 0


async def test_a_failing_effect_is_retried_after_the_lease_not_lost() -> None:
    clock = FakeClock(T0)
    store = InMemoryTimerStore()
    attempts: list[float] = []

    async def handler(claimed: ClaimedTimer) -> None:
        attempts.append((clock.now() - T0).total_seconds())
        if len(attempts) == 1:
            raise RuntimeError("kafka is down")

    loop = TimerLoop(store, clock, handler, lease_s=10)
    await store.schedule([Timer("i|a", ms(0), b"")])
    await loop.tick()
    assert loop.failed == 1 and await store.pending() == 1
    clock.advance(9)
    assert await loop.tick() == 0
    clock.advance(1)
    assert await loop.tick() == 1
    assert attempts == [0, 10] and loop.fired == 1
    assert await store.pending() == 0


@pytest.mark.parametrize("replicas", [2, 5])
async def test_several_loops_on_one_store_never_fire_a_timer_twice(replicas: int) -> None:
    clock = FakeClock(T0)
    store = InMemoryTimerStore()
    fired: list[str] = []

    async def handler(claimed: ClaimedTimer) -> None:
        fired.append(claimed.timer_id)

    loops = [TimerLoop(store, clock, handler, batch=7) for _ in range(replicas)]
    await store.schedule([Timer(f"i|{n}", ms(n % 50), b"") for n in range(500)])
    clock.advance(60)
    while await store.pending():
        for loop in loops:
            await loop.tick()
    assert sorted(fired) == sorted(f"i|{n}" for n in range(500))
