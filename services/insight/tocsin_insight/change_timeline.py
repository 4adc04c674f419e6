"""A change's timeline: its change events (and its rollbacks'), and every deploy-gate
decision and override about it, oldest first (pure: rows in, entries out).

The change events are insight's change facts (the ``changes`` topic); the decisions and
overrides are the gate's rows in PostgreSQL (``gate_decisions``, ``gate_overrides``), kept
for every evaluation asked with the change's id. See docs/change-control.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .gate_state import change_record_of

__all__ = [
    "DECISION_COLUMNS",
    "OVERRIDE_COLUMNS",
    "TimelineEntry",
    "timeline",
]

# The gate_decisions / gate_overrides columns timeline() reads, in its order.
DECISION_COLUMNS = (
    "evaluation_id, evaluated_at, actor, outcome, evaluated_outcome, dry_run, reason, "
    "environment, version, service"
)
OVERRIDE_COLUMNS = (
    "evaluation_id, created_at, actor, reason, overridden_outcome, expires_at, environment, "
    "version, service"
)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # change_event | gate_decision | gate_override
    actor: str
    summary: str
    status: str = ""
    outcome: str = ""
    evaluation_id: str = ""
    environment: str = ""
    version: str = ""
    event_id: str = ""
    service: str = ""


def _change_entry(change_id: str, row: Sequence[object], source: str) -> TimelineEntry:
    record = change_record_of(row)
    what = record.kind if record.kind != "unspecified" else "change"
    if record.change_id == change_id:
        said = f"{what} {record.status}" if record.status != "unspecified" else what
    else:
        said = f"{what} {record.change_id} ({record.status}) of this change"
    summary = f"{said}: {record.summary}" if record.summary else said
    return TimelineEntry(
        at=record.at,
        kind="change_event",
        actor=source,
        summary=summary,
        status=record.status,
        environment=record.environment,
        version=record.version,
        event_id=record.event_id,
        service=record.service_id,
    )


def _decision_entry(row: Sequence[object]) -> TimelineEntry:
    evaluation_id, at, actor, outcome, evaluated, dry_run, reason, env, version, service = row
    assert isinstance(at, datetime)
    said = f"deploy gate: {outcome}"
    if dry_run:
        said = f"deploy gate (dry run): the rules said {evaluated}"
    elif evaluated != outcome:
        said += f" (the rules said {evaluated}; overridden)"
    return TimelineEntry(
        at=at,
        kind="gate_decision",
        actor=str(actor),
        summary=f"{said} for {env} {version}: {reason}" if reason else f"{said} for {env}",
        outcome=str(outcome),
        evaluation_id=str(evaluation_id),
        environment=str(env),
        version=str(version),
        service=str(service),
    )


def _override_entry(row: Sequence[object]) -> TimelineEntry:
    evaluation_id, at, actor, reason, was, expires, env, version, service = row
    assert isinstance(at, datetime) and isinstance(expires, datetime)
    return TimelineEntry(
        at=at,
        kind="gate_override",
        actor=str(actor),
        summary=(
            f"deploy gate overridden ({was} -> pass) for {env} {version} until "
            f"{expires.isoformat()}: {reason}"
        ),
        outcome="pass",
        evaluation_id=str(evaluation_id),
        environment=str(env),
        version=str(version),
        service=str(service),
    )


def timeline(
    change_id: str,
    changes: Iterable[tuple[Sequence[object], str]],
    decisions: Iterable[Sequence[object]],
    overrides: Iterable[Sequence[object]],
) -> list[TimelineEntry]:
    """The entries, oldest first (ties: change events, decisions, overrides).
    ``changes``: (``gate_state.CHANGE_COLUMNS`` row, source) of the change's events and of
    the rollbacks naming it; ``decisions``: :data:`DECISION_COLUMNS` rows; ``overrides``:
    :data:`OVERRIDE_COLUMNS` rows."""
    order = {"change_event": 0, "gate_decision": 1, "gate_override": 2}
    entries = [_change_entry(change_id, row, source) for row, source in changes]
    entries += [_decision_entry(row) for row in decisions]
    entries += [_override_entry(row) for row in overrides]
    return sorted(entries, key=lambda e: (e.at, order[e.kind], e.evaluation_id, e.event_id))
