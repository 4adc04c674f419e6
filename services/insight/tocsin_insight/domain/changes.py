"""Change failure rate and failed-change recovery time, DORA's two stability measures
(docs/insight.md#change-failure).

A change (an event on the ``changes`` topic: a deploy, a config push, a flag flip) **failed**
when an incident was created on its service - or, with ``include_dependents``, on a service
that depends on it, directly or not - after the change and at most ``window`` after it
(``insight.change_failure``). An incident that follows two changes within the window counts
against both: Tocsin cannot tell which one broke things, and says so by listing both.

- ``change_failure_rate`` = failed changes / changes (None when there were no changes).
- ``recovery_seconds`` of a failed change = from the creation of the first incident it is
  blamed for to the resolution of the last of them (the service is back when every one is
  resolved); a failed change with an incident still open has none yet and is counted in
  ``unrecovered``. The recovery times are reported as a distribution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .stats import Distribution, summarize

__all__ = [
    "Change",
    "ChangeFailureReport",
    "ChangeOutcome",
    "IncidentSpan",
    "change_failures",
    "dependents",
]


@dataclass(frozen=True)
class Change:
    """A change to ``service`` at ``at``."""

    change_id: str
    service: str
    at: datetime


@dataclass(frozen=True)
class IncidentSpan:
    """When an incident of ``service`` was created and resolved (None: open)."""

    incident_id: str
    service: str
    created: datetime
    resolved: datetime | None


@dataclass(frozen=True)
class ChangeOutcome:
    """Whether a change failed, the incidents blamed on it and its recovery time."""

    change: Change
    incident_ids: tuple[str, ...]
    recovery_seconds: float | None

    @property
    def failed(self) -> bool:
        return bool(self.incident_ids)


@dataclass(frozen=True)
class ChangeFailureReport:
    """DORA's stability measures over a set of changes."""

    total_changes: int
    failed_changes: int
    change_failure_rate: float | None
    unrecovered: int
    recovery: Distribution
    outcomes: tuple[ChangeOutcome, ...]


def dependents(depends_on: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """For each service, every service that depends on it, directly or not (from each
    service's ``depends_on``)."""
    direct: dict[str, set[str]] = defaultdict(set)
    for service, upstream in depends_on.items():
        for dep in upstream:
            if dep != service:
                direct[dep].add(service)
    result: dict[str, frozenset[str]] = {}
    for service in set(depends_on) | set(direct):
        seen: set[str] = set()
        stack = list(direct.get(service, ()))
        while stack:
            current = stack.pop()
            if current in seen or current == service:
                continue
            seen.add(current)
            stack.extend(direct.get(current, ()))
        result[service] = frozenset(seen)
    return result


def change_failures(
    changes: Iterable[Change],
    incidents: Iterable[IncidentSpan],
    window: timedelta,
    depends_on: Mapping[str, Sequence[str]] | None = None,
) -> ChangeFailureReport:
    """Which ``changes`` failed, given the ``incidents`` that followed them. Pass the
    services' ``depends_on`` to blame incidents on dependents too; None: same service only."""
    if window <= timedelta(0):
        raise ValueError("window: must be greater than 0")
    down = dependents(depends_on) if depends_on is not None else {}
    by_service: dict[str, list[IncidentSpan]] = defaultdict(list)
    for incident in incidents:
        by_service[incident.service].append(incident)
    outcomes: list[ChangeOutcome] = []
    for change in sorted(changes, key=lambda c: (c.at, c.change_id)):
        services = {change.service} | down.get(change.service, frozenset())
        blamed = sorted(
            (
                i
                for s in services
                for i in by_service.get(s, ())
                if change.at < i.created <= change.at + window
            ),
            key=lambda i: (i.created, i.incident_id),
        )
        recovery = None
        if blamed and all(i.resolved is not None for i in blamed):
            last = max(i.resolved for i in blamed if i.resolved is not None)
            recovery = (last - blamed[0].created).total_seconds()
        outcomes.append(ChangeOutcome(change, tuple(i.incident_id for i in blamed), recovery))
    failed = [o for o in outcomes if o.failed]
    return ChangeFailureReport(
        total_changes=len(outcomes),
        failed_changes=len(failed),
        change_failure_rate=len(failed) / len(outcomes) if outcomes else None,
        unrecovered=sum(1 for o in failed if o.recovery_seconds is None),
        recovery=summarize(o.recovery_seconds for o in failed if o.recovery_seconds is not None),
        outcomes=tuple(outcomes),
    )
