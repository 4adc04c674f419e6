"""The pipeline bench's arithmetic, without I/O: percentiles, medians over repetitions with
their spread, when a warm-up is steady, and where an alert's time goes hop by hop.

bench/pipeline_bench.py measures; this module only computes, so each rule here has a fast
unit test (tests/unit/test_pipeline_stats.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# ---------------------------------------------------------------------------------------
# Repetitions: medians and spread


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def spread_pct(values: Sequence[float]) -> float | None:
    """(max - min) / median in percent: how far repetitions of one measurement drift apart
    (None when the median is 0 or a value is not finite)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) != len(values) or not finite:
        return None
    middle = statistics.median(finite)
    if middle == 0:
        return None
    return round((max(finite) - min(finite)) / abs(middle) * 100, 1)


# Counted over every repetition rather than summarised: one lost page in any run matters.
SUMMED = frozenset({"sent", "accepted", "refused", "delivered", "lost", "duplicated"})


def summarize_repetitions(reps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary of repeated runs of a phase: for every numeric field (nested dicts too)
    the median over ``reps`` and its spread in percent; counts in SUMMED added up instead.
    Fields present in only some repetitions are summarised over those; text fields are
    taken from the first repetition."""
    if not reps:
        raise ValueError("reps: expected at least one repetition")
    columns: dict[tuple[str, ...], list[Any]] = {}
    for rep in reps:
        for path, value in _leaves(rep).items():
            columns.setdefault(path, []).append(value)
    median: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    for path, values in columns.items():
        if len(path) == 1 and path[0] in SUMMED and all(_numeric(v) for v in values):
            totals[path[0]] = sum(values)
        elif all(_numeric(v) for v in values):
            floats = [float(v) for v in values]
            middle = statistics.median(floats)
            _put(median, path, round(middle, 3) if math.isfinite(middle) else None)
            if len(values) > 1:
                _put(spread, path, spread_pct(floats))
        else:
            _put(median, path, values[0])
    return {"repetitions": len(reps), "median": median, "spread_pct": spread, "total": totals}


# ---------------------------------------------------------------------------------------
# Warm-up: when is the broker's CPU per page steady?


@dataclass(frozen=True)
class SteadyCriterion:
    """The warm-up ends when at least ``min_seconds`` of load have run and the last
    ``windows`` windows' CPU per page all lie within ``tolerance`` (a fraction) of their
    median; it gives up, unsteady, after ``max_seconds``."""

    min_seconds: float = 60.0
    max_seconds: float = 240.0
    window_seconds: float = 10.0
    windows: int = 3
    tolerance: float = 0.15

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds: expected > 0, got {self.window_seconds}")
        if self.windows < 2:
            raise ValueError(f"windows: expected at least 2, got {self.windows}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance: expected a fraction in (0, 1), got {self.tolerance}")
        if self.max_seconds < self.min_seconds:
            raise ValueError(
                f"max_seconds: expected >= min_seconds ({self.min_seconds}), got {self.max_seconds}"
            )

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rule": (
                f">= {self.min_seconds:g} s of load, then the last {self.windows} windows of "
                f"{self.window_seconds:g} s have broker CPU per page within "
                f"{self.tolerance:.0%} of their median (gives up after {self.max_seconds:g} s)"
            ),
        }


def is_steady(cpu_per_page: Sequence[float], seconds: float, criterion: SteadyCriterion) -> bool:
    """Whether a warm-up that has run ``seconds`` of load, with these per-window CPU-per-page
    figures (oldest first), may stop."""
    if seconds < criterion.min_seconds or len(cpu_per_page) < criterion.windows:
        return False
    last = cpu_per_page[-criterion.windows :]
    if not all(math.isfinite(v) and v > 0 for v in last):
        return False
    middle = statistics.median(last)
    return all(abs(v - middle) <= criterion.tolerance * middle for v in last)


def warmup_done(cpu_per_page: Sequence[float], seconds: float, criterion: SteadyCriterion) -> bool:
    """Stop warming: steady, or out of time."""
    return seconds >= criterion.max_seconds or is_steady(cpu_per_page, seconds, criterion)


# ---------------------------------------------------------------------------------------
# Per hop: where an alert's time goes

# The moments of one alert, in pipeline order. "sent" and "accepted" are the load
# generator's clock, "page" the webhook peer's; the others are the Kafka records' create
# times (set by the producing service when it hands the record over; millisecond
# resolution).
MOMENTS = ("sent", "normalized", "accepted", "incident_event", "notification_request", "page")

# (name, from, to): what each hop measures.
HOPS: tuple[tuple[str, str, str], ...] = (
    ("ingest: sent -> alerts.normalized", "sent", "normalized"),
    ("ingest: alerts.normalized -> accepted (ack and answer)", "normalized", "accepted"),
    ("correlation: alerts.normalized -> incidents.events", "normalized", "incident_event"),
    (
        "escalation: incidents.events -> notifications.requests",
        "incident_event",
        "notification_request",
    ),
    ("notification: notifications.requests -> page", "notification_request", "page"),
    ("total: accepted -> page", "accepted", "page"),
)


def hop_breakdown(
    moments: Mapping[str, Mapping[str, float]], quantiles: Sequence[float] = (0.5, 0.99)
) -> dict[str, dict[str, float | int | None]]:
    """Per hop, the quantiles (in ms) of its duration over the alerts that have both its
    moments. ``moments`` maps an alert's key to its moments (seconds, one clock)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, start, end in HOPS:
        durations = [
            (m[end] - m[start]) * 1000 for m in moments.values() if start in m and end in m
        ]
        row: dict[str, float | int | None] = {"alerts": len(durations)}
        for q in quantiles:
            value = percentile(durations, q)
            row[f"p{round(q * 100)}"] = round(value, 1) if durations else None
        out[name] = row
    return out


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """What grew between two readings of cumulative counters (records per topic, requests
    per type): a name new in ``after`` counts from 0; names that did not grow left out."""
    out = {name: count - before.get(name, 0) for name, count in after.items()}
    return {name: n for name, n in sorted(out.items()) if n}


def per_alert(counts: Mapping[str, int], alerts: int) -> dict[str, float]:
    """Each count divided by ``alerts`` (two decimals), with a "total"; empty for none."""
    if alerts <= 0:
        return {}
    out = {name: round(count / alerts, 2) for name, count in sorted(counts.items()) if count}
    out["total"] = round(sum(counts.values()) / alerts, 2)
    return out
