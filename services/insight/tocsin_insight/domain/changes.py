"""Change failure rate and failed-change recovery time, DORA's two stability measures
(docs/insight.md#change-failure).

A **change** is what the change lifecycle folds the ``changes`` topic's events into
(``tocsin_common.change.lifecycle``): the events sharing a ``change_id`` are one change (an
event without one is a change of its own). A rollback is not a change of its own here: it
is how the change it undoes recovered.

A change **failed** when

- it was reported ``failed``, or was rolled back (a rollback naming it succeeded): it failed
  even when no incident followed; or
- an incident was created on its service - or, with ``include_dependents``, on a service
  that depends on it, directly or not - after the change began and at most ``window`` after
  it ended (``insight.change_failure``; a change reported at one instant begins and ends
  then). An incident following two changes within the window counts against both: Tocsin
  cannot tell which one broke things, and says so by listing both.

Its **recovery time** (DORA's failed deployment recovery time) runs from the moment the
failure was known - the first of: the creation of the first incident blamed on it, its
``failed`` report, the start of its rollback - to the moment service was restored - the
first of: its rollback's success; the resolution of the last incident blamed on it (every
one of them resolved); for a change with no incident blamed on it, the first success of a
change of its service in its environment begun after it (a fix forward). A failed change
not restored yet has none and is counted in ``unrecovered``. The recovery times are
reported as a distribution.

- ``change_failure_rate`` = failed changes / changes (None when there were no changes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tocsin_common.change.lifecycle import ChangeRecord, fold

from .stats import Distribution, summarize

__all__ = [
    "Change",
    "ChangeFailureReport",
    "ChangeOutcome",
    "IncidentSpan",
    "change_failures",
    "changes_of",
    "dependents",
]


@dataclass(frozen=True)
class Change:
    """A change to ``service`` that began at ``at`` (and ended at ``ended``, when it reported
    an end), with what its lifecycle says of its failure and recovery."""

    change_id: str
    service: str
    at: datetime
    ended: datetime | None = None  # succeeded or failed; None: a point in time, or not yet
    reported_failed: datetime | None = None  # its first `failed` report
    rollback_started: datetime | None = None  # the rollback that undid it began
    rolled_back: datetime | None = None  # ... and succeeded
    fixed_forward: datetime | None = None  # a later change of its service+environment succeeded

    @property
    def failed_by_status(self) -> bool:
        return self.reported_failed is not None or self.rolled_back is not None


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
        return bool(self.incident_ids) or self.change.failed_by_status


@dataclass(frozen=True)
class ChangeFailureReport:
    """DORA's stability measures over a set of changes."""

    total_changes: int
    failed_changes: int
    change_failure_rate: float | None
    unrecovered: int
    recovery: Distribution
    outcomes: tuple[ChangeOutcome, ...]


def changes_of(
    records: Iterable[ChangeRecord], since: datetime | None = None, until: datetime | None = None
) -> list[Change]:
    """The changes (rollbacks apart) the events make, that began in ``[since, until)``.
    Pass every event of those changes, of the rollbacks naming them and of the changes after
    them (their fixes forward): an event outside the window still tells how a change ended."""
    records = list(records)
    states = fold(records)
    first_failed: dict[str, datetime] = {}
    for r in records:
        if r.status == "failed" and (r.key not in first_failed or r.at < first_failed[r.key]):
            first_failed[r.key] = r.at
    later: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for s in states.values():
        if s.kind != "rollback" and s.status == "succeeded" and s.finished_at is not None:
            later[(s.service_id, s.environment)].append((s.first_at, s.finished_at))
    found: list[Change] = []
    for s in states.values():
        if s.kind == "rollback":
            continue
        if not ((since is None or s.first_at >= since) and (until is None or s.first_at < until)):
            continue
        rollback = states.get(s.rolled_back_by) if s.rolled_back_by else None
        # A point-in-time rollback (no status reported) succeeded when it was reported.
        undone = None if rollback is None else (rollback.finished_at or rollback.first_at)
        fixes = [done for began, done in later[(s.service_id, s.environment)] if began > s.first_at]
        found.append(
            Change(
                change_id=s.change_id,
                service=s.service_id,
                at=s.first_at,
                ended=s.finished_at,
                reported_failed=first_failed.get(s.change_id),
                rollback_started=None if rollback is None else rollback.first_at,
                rolled_back=undone,
                fixed_forward=min(fixes) if fixes else None,
            )
        )
    return sorted(found, key=lambda c: (c.at, c.change_id))


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
        last = max(change.at, change.ended or change.at) + window
        blamed = sorted(
            (i for s in services for i in by_service.get(s, ()) if change.at < i.created <= last),
            key=lambda i: (i.created, i.incident_id),
        )
        outcomes.append(
            ChangeOutcome(change, tuple(i.incident_id for i in blamed), _recovery(change, blamed))
        )
    failed = [o for o in outcomes if o.failed]
    return ChangeFailureReport(
        total_changes=len(outcomes),
        failed_changes=len(failed),
        change_failure_rate=len(failed) / len(outcomes) if outcomes else None,
        unrecovered=sum(1 for o in failed if o.recovery_seconds is None),
        recovery=summarize(o.recovery_seconds for o in failed if o.recovery_seconds is not None),
        outcomes=tuple(outcomes),
    )


def _recovery(change: Change, blamed: Sequence[IncidentSpan]) -> float | None:
    """Seconds from the failure being known to service restored; None when the change did
    not fail or is not restored yet (the module's docstring says which instants count)."""
    known = [
        t
        for t in (
            blamed[0].created if blamed else None,
            change.reported_failed,
            change.rollback_started,
        )
        if t is not None
    ]
    if not known:
        return None
    restored = [change.rolled_back] if change.rolled_back is not None else []
    if blamed and all(i.resolved is not None for i in blamed):
        restored.append(max(i.resolved for i in blamed if i.resolved is not None))
    if not blamed and change.fixed_forward is not None:
        restored.append(change.fixed_forward)
    if not restored:
        return None
    return max(0.0, (min(restored) - min(known)).total_seconds())
