"""Availability of a service from incident impact, against its SLO (docs/insight.md#availability).

Impact is recorded on incidents as time slices with a level, as status pages name them:
a **major** outage weighs 1, a **partial** outage 0.5, **degraded** performance 0.25. At
each moment the service's weight is the highest of the slices covering it (two overlapping
incidents are not twice the outage). Over a window of ``T`` seconds:

- ``impact_seconds`` = integral of that weight over the window (a 10-minute partial outage
  is 300 impact seconds);
- ``availability`` = 1 - impact_seconds / T;
- ``error_budget_seconds`` = (1 - target) * T, the impact the SLO allows;
- ``budget_remaining_seconds`` = error_budget_seconds - impact_seconds (negative: overspent),
  ``budget_remaining_ratio`` the same as a share of the budget;
- ``burn_rate`` = (impact_seconds / T) / (1 - target): 1 spends exactly the budget by the
  end of the window, 2 spends it in half the window;
- ``up_time_pct`` = 100 * (1 - seconds under a major outage / T), PagerDuty's field of
  that name counted on major impact only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "IMPACT_WEIGHTS",
    "Availability",
    "ImpactLevel",
    "ImpactSlice",
    "availability",
]

ImpactLevel = Literal["major", "partial", "degraded"]
IMPACT_WEIGHTS: dict[str, float] = {"major": 1.0, "partial": 0.5, "degraded": 0.25}


@dataclass(frozen=True)
class ImpactSlice:
    """``service`` was impacted at ``level`` from ``start`` to ``end`` (None: still is)."""

    service: str
    start: datetime
    end: datetime | None
    level: ImpactLevel

    def __post_init__(self) -> None:
        if self.level not in IMPACT_WEIGHTS:
            raise ValueError(f"level: {self.level!r} is not one of {', '.join(IMPACT_WEIGHTS)}")


@dataclass(frozen=True)
class Availability:
    """A service's availability over ``[window_start, window_end)`` against its target."""

    service: str
    window_start: datetime
    window_end: datetime
    seconds: float
    impact_seconds: float
    availability: float
    up_time_pct: float
    target: float
    error_budget_seconds: float
    budget_remaining_seconds: float
    budget_remaining_ratio: float
    burn_rate: float

    @property
    def met(self) -> bool:
        """Whether availability is at or above the target."""
        return self.availability >= self.target


def availability(
    service: str,
    slices: Iterable[ImpactSlice],
    window_start: datetime,
    window_end: datetime,
    target_percent: float,
) -> Availability:
    """Availability of ``service`` over the window from the slices (others' are ignored);
    ``target_percent`` as configured (``99.9``). An open slice runs to ``window_end``."""
    if not 0 < target_percent < 100:
        raise ValueError(f"target_percent: {target_percent} is not between 0 and 100")
    total = (window_end - window_start).total_seconds()
    if total <= 0:
        raise ValueError("window_end: must be after window_start")
    events: list[tuple[datetime, int, float]] = []  # (instant, +1/-1, weight)
    for item in slices:
        if item.service != service:
            continue
        start = max(item.start, window_start)
        end = window_end if item.end is None else min(item.end, window_end)
        if end > start:
            weight = IMPACT_WEIGHTS[item.level]
            events.append((start, 1, weight))
            events.append((end, -1, weight))
    events.sort(key=lambda e: (e[0], e[1]))
    active: dict[float, int] = {}
    impact = 0.0
    major = 0.0
    previous: datetime | None = None
    for at, step, weight in events:
        if previous is not None and active:
            span = (at - previous).total_seconds()
            top = max(active)
            impact += span * top
            if top == IMPACT_WEIGHTS["major"]:
                major += span
        active[weight] = active.get(weight, 0) + step
        if active[weight] == 0:
            del active[weight]
        previous = at
    target = target_percent / 100
    budget = (1 - target) * total
    return Availability(
        service=service,
        window_start=window_start,
        window_end=window_end,
        seconds=total,
        impact_seconds=impact,
        availability=1 - impact / total,
        up_time_pct=100 * (1 - major / total),
        target=target,
        error_budget_seconds=budget,
        budget_remaining_seconds=budget - impact,
        budget_remaining_ratio=(budget - impact) / budget,
        burn_rate=(impact / total) / (1 - target),
    )
