"""Interruption classes by time zone, distributions (percentile_cont) and bootstrap trends,
on hand-computed fixtures."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tocsin_insight.domain.interruptions import (
    InterruptionCounts,
    Notification,
    count_interruptions,
    hour_class,
    interruptions,
)
from tocsin_insight.domain.stats import compare_periods, percentile_cont, summarize

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc,arg-type]


# --- hour classes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "zone", "expected"),
    [
        # Friday 4 December 2026, 10:00 UTC: 11:00 in Berlin, 02:00 in Los Angeles.
        (utc(2026, 12, 4, 10), "Europe/Berlin", "business"),
        (utc(2026, 12, 4, 10), "America/Los_Angeles", "sleep"),
        (utc(2026, 12, 4, 10), "Asia/Tokyo", "off"),  # 19:00 Friday
        (berlin(2026, 12, 7, 7, 59), "Europe/Berlin", "sleep"),
        (berlin(2026, 12, 7, 8, 0), "Europe/Berlin", "business"),
        (berlin(2026, 12, 7, 17, 59), "Europe/Berlin", "business"),
        (berlin(2026, 12, 7, 18, 0), "Europe/Berlin", "off"),
        (berlin(2026, 12, 7, 21, 59), "Europe/Berlin", "off"),
        (berlin(2026, 12, 7, 22, 0), "Europe/Berlin", "sleep"),
        (berlin(2026, 12, 5, 13, 0), "Europe/Berlin", "off"),  # Saturday daytime
        (berlin(2026, 12, 5, 23, 30), "Europe/Berlin", "sleep"),  # a weekend night is sleep
        (berlin(2026, 12, 6, 9, 0), "Europe/Berlin", "off"),  # Sunday morning
        # 06:30 UTC on a Monday: 07:30 in winter (sleep), 08:30 after the clocks went forward.
        (utc(2026, 3, 23, 6, 30), "Europe/Berlin", "sleep"),
        (utc(2026, 3, 30, 6, 30), "Europe/Berlin", "business"),
    ],
)
def test_hour_class(at: datetime, zone: str, expected: str) -> None:
    assert hour_class(at, zone) == expected


def test_hour_class_refuses_naive_instants() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        hour_class(datetime(2026, 12, 4, 10), "UTC")


def test_interruptions_merge_bursts_and_skip_email() -> None:
    zones = {"alice": "Europe/Berlin", "bob": "America/Los_Angeles"}
    t = utc(2026, 12, 4, 10)  # business for alice, sleep for bob
    notes = [
        Notification("alice", "sms", t, "inc-1"),
        Notification("alice", "voice", t + timedelta(seconds=30), "inc-1"),
        Notification("alice", "slack", t + timedelta(seconds=59), "inc-2"),
        # 60 s after the burst began: a new interruption (not chained to the one at 59 s).
        Notification("alice", "sms", t + timedelta(seconds=60), "inc-2"),
        Notification("alice", "email", t + timedelta(minutes=5), "inc-3"),
        Notification("alice", "sms", utc(2026, 12, 4, 17, 30), "inc-4"),  # 18:30: off
        Notification("bob", "voice", t, "inc-1"),
        Notification("bob", "webhook", t, "inc-1"),
        Notification("carol", "email", t, "inc-1"),  # no zone: UTC, and email only
    ]
    found = interruptions(notes, zones)
    assert [(i.person, i.at, i.hour_class, i.notifications, i.incident_ids) for i in found] == [
        ("alice", t, "business", 3, ("inc-1", "inc-2")),
        ("alice", t + timedelta(seconds=60), "business", 1, ("inc-2",)),
        ("alice", utc(2026, 12, 4, 17, 30), "off", 1, ("inc-4",)),
        ("bob", t, "sleep", 1, ("inc-1",)),
    ]
    counts = count_interruptions(notes, zones)
    assert counts == {
        "alice": InterruptionCounts(6, 3, 2, 1, 0),
        "bob": InterruptionCounts(2, 1, 0, 0, 1),
        "carol": InterruptionCounts(1, 0, 0, 0, 0),
    }


def test_interruption_settings_are_honoured() -> None:
    t = utc(2026, 12, 4, 10)
    notes = [Notification("a", "email", t), Notification("a", "email", t + timedelta(seconds=90))]
    assert interruptions(notes, {}) == []
    merged = interruptions(notes, {}, channels=["email"], merge_window=timedelta(minutes=2))
    assert [(i.notifications, i.hour_class) for i in merged] == [(2, "business")]
    assert len(interruptions(notes, {}, channels=["email"], merge_window=timedelta(0))) == 2


# --- distributions ------------------------------------------------------------------------------


def test_percentile_cont_matches_postgres() -> None:
    # SELECT percentile_cont(f) WITHIN GROUP (ORDER BY x) FROM (VALUES (1),(2),(3),(4)) v(x)
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile_cont(values, 0.5) == 2.5
    assert percentile_cont(values, 0.9) == pytest.approx(3.7)
    assert percentile_cont(values, 0.95) == pytest.approx(3.85)
    assert percentile_cont(values, 0.0) == 1.0
    assert percentile_cont(values, 1.0) == 4.0
    assert percentile_cont([7.0], 0.9) == 7.0
    with pytest.raises(ValueError, match="undefined"):
        percentile_cont([], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile_cont(values, 1.5)


def test_summarize() -> None:
    summary = summarize([100, 10, 40, 30, 20])
    assert summary.count == 5
    assert summary.mean == 40
    assert summary.p50 == 30
    assert summary.p90 == pytest.approx(76)  # position 3.6: 40 + 0.6 * (100 - 40)
    assert summary.p95 == pytest.approx(88)  # position 3.8
    assert summary.max == 100
    empty = summarize([])
    assert empty.count == 0 and empty.mean is None and empty.p95 is None and empty.max is None


# --- trends ---------------------------------------------------------------------------------------

PREVIOUS = [float(v) for v in range(10, 20)]  # mean 14.5
HIGHER = [float(v) for v in range(30, 40)]  # mean 34.5


def test_clear_increase_and_decrease() -> None:
    up = compare_periods(HIGHER, PREVIOUS, rng=random.Random(1))
    assert up.verdict == "increase"
    assert up.difference == 20
    assert up.ci_low is not None and up.ci_high is not None
    # Resampled means stay within the samples' ranges: the difference is between 15 and 25.
    assert 15 <= up.ci_low <= 20 <= up.ci_high <= 25
    down = compare_periods(PREVIOUS, HIGHER, rng=random.Random(1))
    assert down.verdict == "decrease" and down.difference == -20


def test_same_distribution_is_no_significant_change() -> None:
    shuffled = PREVIOUS[::-1]
    trend = compare_periods(shuffled, PREVIOUS, rng=random.Random(7), statistic="p90")
    assert trend.difference == 0
    assert trend.ci_low is not None and trend.ci_high is not None
    assert trend.ci_low < 0 < trend.ci_high
    assert trend.verdict == "no significant change"


def test_overlapping_samples_with_a_small_shift_are_not_significant() -> None:
    current = [v + 1 for v in PREVIOUS]
    trend = compare_periods(current, PREVIOUS, rng=random.Random(3))
    assert trend.difference == 1 and trend.verdict == "no significant change"


def test_constant_samples_give_a_point_interval() -> None:
    trend = compare_periods([5.0] * 6, [3.0] * 6, rng=random.Random(0), statistic="p50")
    assert (trend.ci_low, trend.ci_high, trend.verdict) == (2.0, 2.0, "increase")


def test_deterministic_for_a_seed() -> None:
    a = compare_periods(HIGHER, PREVIOUS, rng=random.Random(42), statistic="p95")
    b = compare_periods(HIGHER, PREVIOUS, rng=random.Random(42), statistic="p95")
    assert a == b
    # The interval does depend on the generator (the mean of 10 values has many outcomes).
    c = compare_periods(HIGHER, PREVIOUS, rng=random.Random(42))
    d = compare_periods(HIGHER, PREVIOUS, rng=random.Random(43))
    assert (c.ci_low, c.ci_high) != (d.ci_low, d.ci_high)


def test_rate_statistic() -> None:
    # SLA attainment as 0/1 outcomes: 9 of 10 met now, 2 of 10 before.
    now = [1.0] * 9 + [0.0]
    before = [1.0] * 2 + [0.0] * 8
    trend = compare_periods(now, before, rng=random.Random(5), statistic="rate")
    assert trend.current == 0.9 and trend.previous == 0.2
    assert trend.verdict == "increase"


def test_insufficient_data_and_bad_arguments() -> None:
    few = compare_periods([1.0, 2.0], PREVIOUS, rng=random.Random(0))
    assert few.verdict == "insufficient data" and few.ci_low is None and few.current == 1.5
    none = compare_periods([], PREVIOUS, rng=random.Random(0))
    assert none.current is None and none.difference is None
    with pytest.raises(ValueError, match="statistic"):
        compare_periods(PREVIOUS, PREVIOUS, rng=random.Random(0), statistic="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        compare_periods(PREVIOUS, PREVIOUS, rng=random.Random(0), confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        compare_periods(PREVIOUS, PREVIOUS, rng=random.Random(0), resamples=10)
