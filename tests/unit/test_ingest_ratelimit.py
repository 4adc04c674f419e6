"""Sliding-window rate-limit arithmetic (the part the Redis Lua script mirrors)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tocsin_ingest import ratelimit
from tocsin_ingest.ratelimit import decide, estimate, retry_after, window_at, window_keys


def test_windows_are_whole_minutes_since_the_epoch() -> None:
    assert window_at(120.0) == ratelimit.Window(2, 0.0)
    assert window_at(179.5) == ratelimit.Window(2, 59.5)
    assert window_keys("abc", window_at(179.5)) == (
        "tocsin:ingest:ratelimit:abc:2",
        "tocsin:ingest:ratelimit:abc:1",
    )


def test_the_previous_window_weighs_by_how_much_of_it_is_still_inside_the_last_minute() -> None:
    assert estimate(previous=60, current=10, elapsed=0, window_s=60) == 70
    assert estimate(previous=60, current=10, elapsed=15, window_s=60) == 55
    assert estimate(previous=60, current=10, elapsed=60, window_s=60) == 10


def test_events_pass_until_the_limit_then_are_refused() -> None:
    assert decide(previous=0, current=9, cost=1, limit=10, elapsed=30).allowed
    refused = decide(previous=0, current=10, cost=1, limit=10, elapsed=30)
    assert not refused.allowed
    # 30 s to the next window; there the 10 weigh 10 * (1 - t/60), and one more fits once
    # that is <= 9: after 6 s more.
    assert refused.retry_after == 36
    assert decide(previous=10, current=0, cost=1, limit=10, elapsed=6).allowed


def test_retry_after_is_when_the_previous_window_has_faded_enough() -> None:
    # 60 from the last window, 0 now, limit 40: at t the weighted rate is 60 * (1 - t/60);
    # one more fits when that is <= 39, i.e. t >= 21 s; we are at 10 s, so 11 s.
    refused = decide(previous=60, current=0, cost=1, limit=40, elapsed=10)
    assert not refused.allowed
    assert refused.retry_after == 11
    assert decide(previous=60, current=0, cost=1, limit=40, elapsed=21).allowed


def test_a_batch_bigger_than_the_limit_passes_alone_in_an_empty_window() -> None:
    assert decide(previous=0, current=0, cost=500, limit=100, elapsed=5).allowed
    assert not decide(previous=0, current=1, cost=500, limit=100, elapsed=5).allowed


def test_remaining_counts_down() -> None:
    decision = decide(previous=0, current=3, cost=2, limit=10, elapsed=0)
    assert decision.allowed and decision.remaining == 5 and decision.limit == 10


@given(
    previous=st.integers(0, 10_000),
    current=st.integers(0, 10_000),
    cost=st.integers(1, 1000),
    limit=st.integers(1, 10_000),
    elapsed=st.floats(0, 59.999),
)
@example(previous=0, current=171, cost=1, limit=58, elapsed=0.0)  # found: float rounding
def test_waiting_retry_after_seconds_makes_room(
    previous: int, current: int, cost: int, limit: int, elapsed: float
) -> None:
    decision = decide(previous, current, cost, limit, elapsed)
    if decision.allowed:
        return
    assert decision.retry_after >= 1
    later = elapsed + decision.retry_after
    if later < 60:
        assert decide(previous, current, cost, limit, later).allowed
    else:  # next window: this window's count becomes the previous one
        assert decide(current, 0, cost, limit, later - 60).allowed or cost > limit


@pytest.mark.parametrize("elapsed", [0.0, 30.0, 59.9])
def test_retry_after_is_at_least_one_second(elapsed: float) -> None:
    assert retry_after(0, 1000, 1, 10, elapsed, 60) >= 1
