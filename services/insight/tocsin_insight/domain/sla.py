"""SLA outcome of one incident: was it acknowledged and resolved within its priority's
targets, counted in business time (docs/insight.md#sla-attainment).

The ack clock runs from the incident's creation to its first acknowledgement, or to its
resolution if nobody acknowledged it first (a resolve ends the wait for a response too: an
incident that resolved itself in two minutes did not wait for anyone). The resolve clock
runs from creation to resolution. A clock that has not stopped is ``pending`` until its
deadline passes and ``breached`` after, measured to ``now`` (passed in). Met means
``elapsed <= target``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tocsin_common.config import Insight

from .calendar import Calendar, business_deadline, business_seconds, calendar_from_config

__all__ = [
    "Attainment",
    "Breach",
    "ClockOutcome",
    "ClockStatus",
    "SlaOutcome",
    "SlaTargets",
    "attainment",
    "breaches",
    "clock_outcome",
    "sla_outcome",
    "sla_targets",
]

ClockStatus = Literal["met", "breached", "pending"]


@dataclass(frozen=True)
class SlaTargets:
    """The targets of one priority and the calendar they are counted on (None: 24x7)."""

    priority: str
    ack_target: timedelta | None
    resolve_target: timedelta | None
    calendar: Calendar | None

    @property
    def calendar_id(self) -> str:
        """``24x7`` or the calendar's id, as reports name it."""
        return "24x7" if self.calendar is None else self.calendar.id


@dataclass(frozen=True)
class ClockOutcome:
    """One SLA clock (ack or resolve) of one incident.

    ``elapsed_seconds`` is business time from creation to ``stopped_at`` (or to ``now``
    while running); ``breached_by_seconds`` is how much business time past the target
    (0 unless breached); ``deadline`` is the instant the target fell or falls due.
    """

    target_seconds: float
    deadline: datetime
    status: ClockStatus
    elapsed_seconds: float
    breached_by_seconds: float
    stopped_at: datetime | None


@dataclass(frozen=True)
class SlaOutcome:
    """Both clocks of an incident under its priority's policy (None: no such target)."""

    priority: str
    calendar_id: str
    ack: ClockOutcome | None
    resolve: ClockOutcome | None

    @property
    def breached(self) -> bool:
        """Whether either clock is breached."""
        return any(c is not None and c.status == "breached" for c in (self.ack, self.resolve))


def sla_targets(insight: Insight, priority: str | None, team_id: str | None) -> SlaTargets | None:
    """The targets for an incident of ``priority`` owned by ``team_id``, from the config;
    None when the priority has no SLA policy."""
    policy = insight.sla_policy(priority)
    if policy is None or priority is None:
        return None
    configured = insight.sla_calendar(policy, team_id)
    calendar = None if configured is None else calendar_from_config(configured)
    return SlaTargets(priority, policy.ack_target, policy.resolve_target, calendar)


def clock_outcome(
    calendar: Calendar | None,
    target: timedelta,
    started: datetime,
    stopped: datetime | None,
    now: datetime,
) -> ClockOutcome:
    """One clock: ``target`` of business time from ``started``, stopped at ``stopped``
    (None: still running at ``now``)."""
    target_seconds = target.total_seconds()
    deadline = business_deadline(calendar, started, target_seconds)
    end = stopped if stopped is not None else now
    elapsed = business_seconds(calendar, started, end)
    over = max(0.0, elapsed - target_seconds)
    status: ClockStatus
    if over > 0:
        status = "breached"
    elif stopped is not None:
        status = "met"
    else:
        status = "pending"
    return ClockOutcome(target_seconds, deadline, status, elapsed, over, stopped)


def sla_outcome(
    targets: SlaTargets,
    created: datetime,
    acknowledged: datetime | None,
    resolved: datetime | None,
    now: datetime,
) -> SlaOutcome:
    """The SLA outcome of an incident created at ``created``, first acknowledged at
    ``acknowledged`` and resolved at ``resolved`` (None: not yet), as of ``now``."""
    ack = None
    if targets.ack_target is not None:
        stops = [t for t in (acknowledged, resolved) if t is not None]
        ack = clock_outcome(
            targets.calendar, targets.ack_target, created, min(stops) if stops else None, now
        )
    resolve = None
    if targets.resolve_target is not None:
        resolve = clock_outcome(targets.calendar, targets.resolve_target, created, resolved, now)
    return SlaOutcome(targets.priority, targets.calendar_id, ack, resolve)


@dataclass(frozen=True)
class Attainment:
    """SLA attainment of a group of incidents, for one clock (ack or resolve).

    ``rate`` = met / (met + breached): the share of decided clocks that met the target;
    pending clocks (still running, deadline not passed) are left out until they stop or
    breach. None when nothing is decided yet.
    """

    met: int
    breached: int
    pending: int
    rate: float | None
    breached_by_seconds_total: float


def attainment(outcomes: Iterable[SlaOutcome]) -> tuple[Attainment, Attainment]:
    """Ack and resolve attainment of ``outcomes`` (incidents without that target skipped)."""
    items = list(outcomes)
    return _attain(o.ack for o in items), _attain(o.resolve for o in items)


def _attain(clocks: Iterable[ClockOutcome | None]) -> Attainment:
    decided = [c for c in clocks if c is not None]
    met = sum(1 for c in decided if c.status == "met")
    breached = sum(1 for c in decided if c.status == "breached")
    pending = len(decided) - met - breached
    total_over = sum(c.breached_by_seconds for c in decided)
    rate = met / (met + breached) if met + breached else None
    return Attainment(met, breached, pending, rate, total_over)


@dataclass(frozen=True)
class Breach:
    """One breached clock, for the breach list of a report."""

    incident_id: str
    priority: str
    clock: Literal["ack", "resolve"]
    deadline: datetime
    breached_by_seconds: float
    pending: bool  # still running (not acknowledged / resolved yet)


def breaches(outcomes: Iterable[tuple[str, SlaOutcome]]) -> list[Breach]:
    """Every breached clock of ``(incident_id, outcome)`` pairs, worst first (ties: earlier
    deadline, then incident id, then ack before resolve)."""
    found: list[Breach] = []
    for incident_id, outcome in outcomes:
        clocks: tuple[tuple[Literal["ack", "resolve"], ClockOutcome | None], ...] = (
            ("ack", outcome.ack),
            ("resolve", outcome.resolve),
        )
        for name, clock in clocks:
            if clock is not None and clock.status == "breached":
                found.append(
                    Breach(
                        incident_id,
                        outcome.priority,
                        name,
                        clock.deadline,
                        clock.breached_by_seconds,
                        clock.stopped_at is None,
                    )
                )
    found.sort(key=lambda b: (-b.breached_by_seconds, b.deadline, b.incident_id, b.clock))
    return found
