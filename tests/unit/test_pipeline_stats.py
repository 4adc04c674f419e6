"""The pipeline bench's arithmetic (bench/pipeline_stats.py): medians over repetitions and
their spread, the warm-up's steady rule, the per-hop breakdown, counter deltas."""

from __future__ import annotations

import math

import pytest

from bench.kafka_counts import split_internal
from bench.pipeline_stats import (
    SteadyCriterion,
    counter_delta,
    hop_breakdown,
    is_steady,
    per_alert,
    percentile,
    spread_pct,
    summarize_repetitions,
    warmup_done,
)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0  # index round(0.5 * 99) = 50 (banker's: 50)
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert math.isnan(percentile([], 0.5))


def test_spread_is_range_over_median() -> None:
    assert spread_pct([10.0, 11.0, 12.0]) == pytest.approx(18.2)
    assert spread_pct([5.0, 5.0, 5.0]) == 0.0
    assert spread_pct([0.0, 0.0]) is None
    assert spread_pct([1.0, math.nan]) is None


def test_repetitions_give_medians_spread_and_summed_counts() -> None:
    reps = [
        {
            "delivered_per_s": 100.0,
            "lost": 0,
            "duplicated": 1,
            "latency_ms": {"p50": 10.0, "p99": 30.0},
            "cpu_ms_per_page": {"kafka": 2.0},
            "note": "first",
        },
        {
            "delivered_per_s": 90.0,
            "lost": 2,
            "duplicated": 0,
            "latency_ms": {"p50": 12.0, "p99": 90.0},
            "cpu_ms_per_page": {"kafka": 3.0},
            "note": "second",
        },
        {
            "delivered_per_s": 110.0,
            "lost": 0,
            "duplicated": 0,
            "latency_ms": {"p50": 11.0, "p99": 33.0},
            "cpu_ms_per_page": {"kafka": 2.5, "redis": 0.5},
            "note": "third",
        },
    ]
    summary = summarize_repetitions(reps)
    assert summary["repetitions"] == 3
    assert summary["median"]["delivered_per_s"] == 100.0
    assert summary["median"]["latency_ms"] == {"p50": 11.0, "p99": 33.0}
    assert summary["median"]["cpu_ms_per_page"] == {"kafka": 2.5, "redis": 0.5}
    assert summary["median"]["note"] == "first"
    assert summary["spread_pct"]["delivered_per_s"] == 20.0
    assert summary["spread_pct"]["latency_ms"]["p99"] == pytest.approx(181.8)
    # A field seen once has no spread to report.
    assert "redis" not in summary["spread_pct"]["cpu_ms_per_page"]
    # One lost page in any repetition shows: counts add up, they are not medians.
    assert summary["total"] == {"lost": 2, "duplicated": 1}


def test_repetitions_refuse_none() -> None:
    with pytest.raises(ValueError, match="reps"):
        summarize_repetitions([])


CRITERION = SteadyCriterion(min_seconds=60, max_seconds=180, window_seconds=10, tolerance=0.15)


def test_steady_needs_the_minimum_load_time() -> None:
    flat = [5.0] * 5
    assert not is_steady(flat, 50, CRITERION)
    assert is_steady(flat, 60, CRITERION)


def test_steady_needs_the_last_windows_close_to_their_median() -> None:
    # A cooling JIT: CPU per page still falling by more than the tolerance.
    falling = [17.7, 12.0, 9.0, 7.0, 5.5]
    assert not is_steady(falling, 70, CRITERION)
    settled = [17.7, 12.0, 7.0, 6.6, 7.2]
    assert is_steady(settled, 70, CRITERION)
    # Too few windows, or a window with no pages, is not steady.
    assert not is_steady([7.0, 7.0], 70, CRITERION)
    assert not is_steady([7.0, 7.0, math.nan], 70, CRITERION)


def test_warmup_stops_at_its_limit_even_unsteady() -> None:
    falling = [17.7, 12.0, 9.0, 7.0, 5.5]
    assert not warmup_done(falling, 170, CRITERION)
    assert warmup_done(falling, 180, CRITERION)


def test_criterion_is_validated_and_described() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        SteadyCriterion(tolerance=1.5)
    with pytest.raises(ValueError, match="max_seconds"):
        SteadyCriterion(min_seconds=60, max_seconds=30)
    with pytest.raises(ValueError, match="windows"):
        SteadyCriterion(windows=1)
    described = CRITERION.describe()
    assert described["min_seconds"] == 60
    assert "within 15%" in described["rule"]


def test_hops_from_moments() -> None:
    moments = {
        "a": {
            "sent": 0.000,
            "normalized": 0.002,
            "accepted": 0.003,
            "incident_event": 0.010,
            "notification_request": 0.015,
            "page": 0.020,
        },
        "b": {
            "sent": 1.000,
            "normalized": 1.004,
            "accepted": 1.005,
            "incident_event": 1.030,
            "notification_request": 1.040,
            "page": 1.055,
        },
        # Never paged: counts in the hops it has, not in the others.
        "c": {"sent": 2.0, "normalized": 2.001, "accepted": 2.002},
    }
    hops = hop_breakdown(moments, quantiles=(0.0, 1.0))
    assert hops["ingest: sent -> alerts.normalized"] == {"alerts": 3, "p0": 1.0, "p100": 4.0}
    assert hops["correlation: alerts.normalized -> incidents.events"] == {
        "alerts": 2,
        "p0": 8.0,
        "p100": 26.0,
    }
    assert hops["escalation: incidents.events -> notifications.requests"]["p100"] == 10.0
    assert hops["notification: notifications.requests -> page"]["p0"] == 5.0
    assert hops["total: accepted -> page"] == {"alerts": 2, "p0": 17.0, "p100": 50.0}


def test_hops_without_data_say_so() -> None:
    hops = hop_breakdown({"a": {"sent": 0.0, "accepted": 0.001}})
    assert hops["total: accepted -> page"] == {"alerts": 0, "p50": None, "p99": None}


def test_counter_delta_and_per_alert() -> None:
    before = {"alerts.normalized": 100, "incidents.events": 300, "__consumer_offsets": 50}
    after = {
        "alerts.normalized": 200,
        "incidents.events": 600,
        "__consumer_offsets": 80,
        "tocsin-correlation-incidents-changelog": 100,  # created meanwhile: from 0
        "audit": 0,
    }
    delta = counter_delta(before, after)
    assert delta == {
        "__consumer_offsets": 30,
        "alerts.normalized": 100,
        "incidents.events": 300,
        "tocsin-correlation-incidents-changelog": 100,
    }
    records, internal = split_internal(delta)
    assert internal == {"__consumer_offsets": 30}
    assert per_alert(records, 100) == {
        "alerts.normalized": 1.0,
        "incidents.events": 3.0,
        "tocsin-correlation-incidents-changelog": 1.0,
        "total": 5.0,
    }
    assert per_alert(records, 0) == {}
