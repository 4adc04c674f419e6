"""Distributions and trends (docs/insight.md#reading-distributions).

Percentiles are PostgreSQL's ``percentile_cont``: over the n values sorted ascending, the
fraction f sits at 0-based position ``f * (n - 1)``; between the two values around it the
result is interpolated linearly. So ``percentile_cont(0.5)`` of 1, 2, 3, 4 is 2.5 in Python
and in SQL (``percentile_cont(0.5) WITHIN GROUP (ORDER BY x)``), and a report computed
either way gives the same figures. (This is also numpy's default, "linear".)

A trend compares a statistic of one period with the previous period's and puts a bootstrap
confidence interval around the difference: both samples are resampled with replacement
``resamples`` times (the random generator is passed in, so the result is reproducible), the
statistic's difference is taken each time, and the interval is the ``percentile_cont`` of
those differences at (1 - confidence) / 2 and (1 + confidence) / 2. An interval that
contains 0 is reported as "no significant change".
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "STATISTICS",
    "Distribution",
    "Statistic",
    "Trend",
    "TrendVerdict",
    "compare_periods",
    "percentile_cont",
    "summarize",
]


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont(fraction)`` of values already sorted ascending."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: {fraction} is not between 0 and 1")
    if not sorted_values:
        raise ValueError("sorted_values: a percentile of no values is undefined")
    position = fraction * (len(sorted_values) - 1)
    below = math.floor(position)
    above = math.ceil(position)
    low, high = float(sorted_values[below]), float(sorted_values[above])
    return low + (high - low) * (position - below)


@dataclass(frozen=True)
class Distribution:
    """count, mean, p50, p90, p95 and max of a set of values (seconds, for durations).
    Everything but ``count`` is None when there are no values."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    max: float | None


def summarize(values: Iterable[float]) -> Distribution:
    """The distribution of ``values`` (None values are the caller's to leave out)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return Distribution(0, None, None, None, None, None)
    return Distribution(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile_cont(ordered, 0.5),
        p90=percentile_cont(ordered, 0.9),
        p95=percentile_cont(ordered, 0.95),
        max=ordered[-1],
    )


Statistic = Literal["mean", "p50", "p90", "p95", "rate"]
TrendVerdict = Literal["increase", "decrease", "no significant change", "insufficient data"]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _percentile(fraction: float) -> Callable[[Sequence[float]], float]:
    def compute(values: Sequence[float]) -> float:
        return percentile_cont(sorted(values), fraction)

    return compute


# "rate" is the mean of 0/1 outcomes (e.g. acknowledged within the SLA): the share of 1s.
STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": _mean,
    "rate": _mean,
    "p50": _percentile(0.5),
    "p90": _percentile(0.9),
    "p95": _percentile(0.95),
}


@dataclass(frozen=True)
class Trend:
    """A statistic of the current period against the previous one.

    ``difference`` is current - previous; ``ci_low``/``ci_high`` bound it at ``confidence``
    (None with too little data). ``verdict`` says "increase" or "decrease" only when the
    whole interval is on one side of 0.
    """

    statistic: str
    current: float | None
    previous: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    verdict: TrendVerdict
    current_count: int
    previous_count: int
    resamples: int


def compare_periods(
    current: Sequence[float],
    previous: Sequence[float],
    *,
    rng: random.Random,
    statistic: Statistic = "mean",
    resamples: int = 1000,
    confidence: float = 0.95,
    min_count: int = 5,
) -> Trend:
    """The trend of ``statistic`` from ``previous`` to ``current`` with a bootstrap interval.

    ``rng`` is the only source of randomness (``random.Random(seed)``): the same inputs and
    seed give the same interval. Fewer than ``min_count`` values in either period:
    "insufficient data", no interval. Cost: ``resamples * (len(current) + len(previous))``
    draws.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: {statistic!r} is not one of {', '.join(STATISTICS)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence} is not between 0 and 1 (exclusive)")
    if resamples < 100:
        raise ValueError(f"resamples: {resamples} is too few for an interval (at least 100)")
    compute = STATISTICS[statistic]
    cur = [float(v) for v in current]
    prev = [float(v) for v in previous]
    cur_value = compute(cur) if cur else None
    prev_value = compute(prev) if prev else None
    difference = None if cur_value is None or prev_value is None else cur_value - prev_value
    if len(cur) < min_count or len(prev) < min_count:
        return Trend(
            statistic, cur_value, prev_value, difference, None, None, confidence,
            "insufficient data", len(cur), len(prev), 0,
        )  # fmt: skip
    diffs = sorted(
        compute(rng.choices(cur, k=len(cur))) - compute(rng.choices(prev, k=len(prev)))
        for _ in range(resamples)
    )
    low = percentile_cont(diffs, (1 - confidence) / 2)
    high = percentile_cont(diffs, (1 + confidence) / 2)
    verdict: TrendVerdict
    if low > 0:
        verdict = "increase"
    elif high < 0:
        verdict = "decrease"
    else:
        verdict = "no significant change"
    return Trend(
        statistic, cur_value, prev_value, difference, low, high, confidence, verdict,
        len(cur), len(prev), resamples,
    )  # fmt: skip
