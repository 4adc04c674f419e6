"""The deploy gate's state snapshot from insight's rows and the config (pure: no I/O).

The servicer (gate_api.py) reads the rows; this module turns them into the
:class:`~tocsin_common.change.gate.GateState` the pure ``evaluate`` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

from tocsin_common.change.gate import (
    AdHocFreeze,
    ErrorBudget,
    GateOverride,
    GateState,
    InFlightChange,
    OnCallPerson,
    OpenIncident,
    Outcome,
)
from tocsin_common.change.lifecycle import (
    ChangeKind,
    ChangeRecord,
    ChangeStatus,
    fold,
    in_flight,
)
from tocsin_common.config import TocsinConfig

from tocsin_insight.domain.availability import Availability

__all__ = [
    "CHANGE_COLUMNS",
    "change_record_of",
    "changes_in_flight_of",
    "dependencies_of",
    "error_budget_of",
    "freeze_of",
    "override_of",
    "state_of",
]

# The change_facts columns change_record_of reads, in its order.
CHANGE_COLUMNS = (
    "event_id, service_id, at, change_id, kind, status, version, rollback_of, environment, summary"
)

OPEN_STATUSES = frozenset({"triggered", "acknowledged"})


def dependencies_of(config: TocsinConfig, service: str) -> tuple[str, ...]:
    """Every service ``service`` depends on, directly or not, sorted (the config has no
    cycles: the loader refuses them)."""
    direct = {s.id: tuple(s.depends_on) for s in config.services}
    seen: set[str] = set()
    todo = list(direct.get(service, ()))
    while todo:
        dep = todo.pop()
        if dep in seen or dep == service:
            continue
        seen.add(dep)
        todo.extend(direct.get(dep, ()))
    return tuple(sorted(seen))


def error_budget_of(found: Availability | None) -> ErrorBudget:
    if found is None:
        return ErrorBudget()
    return ErrorBudget(
        remaining_percent=round(found.budget_remaining_ratio * 100, 6),
        burn_rate=found.burn_rate,
    )


def freeze_of(row: Sequence[object]) -> AdHocFreeze:
    """A ``gate_freezes`` row: freeze_id, start_at, end_at, author, reason, services,
    environments."""
    freeze_id, start, end, author, reason, services, environments = row
    assert isinstance(start, datetime) and isinstance(end, datetime)
    return AdHocFreeze(
        freeze_id=str(freeze_id),
        start=start,
        end=end,
        author=str(author),
        reason=str(reason),
        services=frozenset(services or ()),  # type: ignore[call-overload]
        environments=frozenset(environments or ()),  # type: ignore[call-overload]
    )


def override_of(row: Sequence[object]) -> GateOverride:
    """A ``gate_overrides`` row: evaluation_id, service, environment, version, actor, reason,
    created_at, expires_at, overridden_outcome."""
    evaluation_id, service, environment, version, actor, reason, created, expires, was = row
    assert isinstance(created, datetime) and isinstance(expires, datetime)
    outcome: Outcome = "fail" if was == "fail" else "warn"
    return GateOverride(
        service=str(service),
        environment=str(environment),
        version=str(version),
        actor=str(actor),
        reason=str(reason),
        created_at=created,
        expires_at=expires,
        evaluation_id=str(evaluation_id),
        overridden_outcome=outcome,
    )


def change_record_of(row: Sequence[object]) -> ChangeRecord:
    """A ``change_facts`` row (:data:`CHANGE_COLUMNS`) as the lifecycle's record."""
    event_id, service_id, at, change_id, kind, status, version, rollback_of, env, summary = row
    assert isinstance(at, datetime)
    return ChangeRecord(
        event_id=str(event_id),
        service_id=str(service_id),
        at=at,
        change_id=str(change_id),
        kind=cast(ChangeKind, str(kind) or "unspecified"),
        status=cast(ChangeStatus, str(status) or "unspecified"),
        version=str(version),
        rollback_of=str(rollback_of),
        environment=str(env),
        summary=str(summary),
    )


def changes_in_flight_of(
    rows: Iterable[Sequence[object]], now: datetime, within: timedelta
) -> tuple[InFlightChange, ...]:
    """The changes still ``started`` among the events of ``rows`` (folded per change, in any
    order), started at most ``within`` ago. Events without a change id are point-in-time
    changes: never in flight."""
    records = [change_record_of(r) for r in rows]
    return in_flight(fold(r for r in records if r.change_id), now, within)


def state_of(
    config: TocsinConfig,
    service: str,
    incidents: Iterable[Sequence[object]],
    budgets: Mapping[str, Availability | None],
    freezes: Iterable[AdHocFreeze],
    overrides: Iterable[GateOverride],
    on_call: Sequence[OnCallPerson] | None = None,
    changes: Sequence[InFlightChange] = (),
    unknown: Mapping[str, str] | None = None,
) -> GateState:
    """``incidents``: ``incident_facts`` rows (incident_id, service_id, urgency, priority,
    title, status); only open ones count. ``on_call``: who is on call for ``service`` (None:
    not asked); ``unknown``: inputs that could not be read, and why."""
    return GateState(
        open_incidents=tuple(
            OpenIncident(
                incident_id=str(incident_id),
                service=str(service_id),
                urgency=str(urgency),
                priority=str(priority) or None,
                title=str(title),
            )
            for incident_id, service_id, urgency, priority, title, status in incidents
            if status in OPEN_STATUSES
        ),
        dependencies={service: dependencies_of(config, service)},
        error_budgets={s: error_budget_of(a) for s, a in budgets.items()},
        freezes=tuple(freezes),
        overrides=tuple(overrides),
        on_call={} if on_call is None else {service: tuple(on_call)},
        changes_in_flight=tuple(changes),
        unknown=dict(unknown or {}),
    )
