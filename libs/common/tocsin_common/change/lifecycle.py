"""The change lifecycle: change events folded into each change's current state (pure).

A change (a deploy, a rollback, a config change, a feature flag flip) is reported by one or
more :class:`~tocsin.v1.alert_pb2.ChangeEvent` s sharing its ``change_id``: ``started``,
then ``succeeded`` or ``failed``, perhaps later ``rolled_back``. An event without a
``change_id`` is a change of its own (a plain PagerDuty change event, id = its event id).

The fold does not depend on the order events arrive in: a status only moves forward
(started < succeeded | failed < rolled_back; between succeeded and failed the later report
wins), and :func:`fold` sorts by event time first. A rollback that did not fail (succeeded,
or a point-in-time rollback) marks the change it names ``rolled_back``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from tocsin.v1 import alert_pb2

from .gate import InFlightChange

__all__ = [
    "ChangeKind",
    "ChangeRecord",
    "ChangeState",
    "ChangeStatus",
    "apply",
    "fold",
    "in_flight",
    "kind_name",
    "status_name",
]

ChangeKind = Literal["unspecified", "deploy", "rollback", "config", "feature_flag"]
ChangeStatus = Literal["unspecified", "started", "succeeded", "failed", "rolled_back"]

_KINDS: dict[int, ChangeKind] = {
    alert_pb2.CHANGE_KIND_UNSPECIFIED: "unspecified",
    alert_pb2.CHANGE_KIND_DEPLOY: "deploy",
    alert_pb2.CHANGE_KIND_ROLLBACK: "rollback",
    alert_pb2.CHANGE_KIND_CONFIG: "config",
    alert_pb2.CHANGE_KIND_FEATURE_FLAG: "feature_flag",
}
_STATUSES: dict[int, ChangeStatus] = {
    alert_pb2.CHANGE_STATUS_UNSPECIFIED: "unspecified",
    alert_pb2.CHANGE_STATUS_STARTED: "started",
    alert_pb2.CHANGE_STATUS_SUCCEEDED: "succeeded",
    alert_pb2.CHANGE_STATUS_FAILED: "failed",
    alert_pb2.CHANGE_STATUS_ROLLED_BACK: "rolled_back",
}


def kind_name(value: int) -> ChangeKind:
    """A ``tocsin.v1.ChangeKind`` as its name here (unknown values: ``unspecified``)."""
    return _KINDS.get(value, "unspecified")


def status_name(value: int) -> ChangeStatus:
    """A ``tocsin.v1.ChangeStatus`` as its name here (unknown values: ``unspecified``)."""
    return _STATUSES.get(value, "unspecified")


_STAGE = {"unspecified": 0, "started": 1, "succeeded": 2, "failed": 2, "rolled_back": 3}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ChangeRecord:
    """One change event as plain values."""

    event_id: str
    service_id: str
    at: datetime
    change_id: str = ""
    kind: ChangeKind = "unspecified"
    status: ChangeStatus = "unspecified"
    version: str = ""
    rollback_of: str = ""
    environment: str = ""
    summary: str = ""

    @property
    def key(self) -> str:
        """The change this event is about."""
        return self.change_id or self.event_id

    @classmethod
    def from_proto(cls, event: alert_pb2.ChangeEvent) -> ChangeRecord:
        at = event.timestamp if event.HasField("timestamp") else event.received_time
        return cls(
            event_id=event.event_id,
            service_id=event.service_id,
            at=at.ToDatetime(tzinfo=UTC),
            change_id=event.change_id,
            kind=kind_name(event.kind),
            status=status_name(event.status),
            version=event.version,
            rollback_of=event.rollback_of,
            environment=event.environment,
            summary=event.summary,
        )


@dataclass(frozen=True)
class ChangeState:
    """A change as its events so far describe it."""

    change_id: str
    service_id: str
    kind: ChangeKind
    status: ChangeStatus
    version: str
    environment: str
    summary: str
    first_at: datetime  # its earliest event
    status_at: datetime  # when it reached its status
    started_at: datetime | None = None
    finished_at: datetime | None = None  # succeeded or failed
    rollback_of: str = ""
    rolled_back_by: str = ""  # the rollback change that undid it
    events: int = 0

    @property
    def in_flight(self) -> bool:
        return self.status == "started"


def _new(record: ChangeRecord) -> ChangeState:
    return ChangeState(
        change_id=record.key,
        service_id=record.service_id,
        kind=record.kind,
        status="unspecified",
        version=record.version,
        environment=record.environment,
        summary=record.summary,
        first_at=record.at,
        status_at=_EPOCH,
        rollback_of=record.rollback_of,
    )


def apply(state: ChangeState | None, record: ChangeRecord) -> ChangeState:
    """``state`` after one more event of its change (None: the change's first event)."""
    current = state or _new(record)
    if record.key != current.change_id:
        raise ValueError(f"change_id: event of {record.key!r} applied to {current.change_id!r}")
    stage, now_stage = _STAGE[record.status], _STAGE[current.status]
    moves = stage > now_stage or (
        stage == now_stage and stage == 2 and record.at >= current.status_at
    )
    status = record.status if moves else current.status
    started_at = current.started_at
    if record.status == "started":
        started_at = record.at if started_at is None else min(started_at, record.at)
    finished_at = current.finished_at
    if record.status in ("succeeded", "failed") and moves:
        finished_at = record.at
    return replace(
        current,
        kind=record.kind if record.kind != "unspecified" else current.kind,
        status=status,
        status_at=record.at if moves else current.status_at,
        version=record.version or current.version,
        environment=record.environment or current.environment,
        summary=record.summary or current.summary,
        rollback_of=record.rollback_of or current.rollback_of,
        first_at=min(current.first_at, record.at),
        started_at=started_at,
        finished_at=finished_at,
        events=current.events + 1,
    )


def fold(records: Iterable[ChangeRecord]) -> dict[str, ChangeState]:
    """Every change's state from its events (any order), rollbacks linked to their change."""
    states: dict[str, ChangeState] = {}
    for record in sorted(records, key=lambda r: (r.at, r.event_id)):
        states[record.key] = apply(states.get(record.key), record)
    for rollback in sorted(states.values(), key=lambda s: s.first_at):
        if rollback.kind != "rollback" or rollback.status in ("started", "failed"):
            continue
        target = states.get(rollback.rollback_of)
        if target is None or target.service_id != rollback.service_id:
            continue
        at = rollback.finished_at or rollback.status_at
        states[target.change_id] = replace(
            target,
            status="rolled_back",
            status_at=max(target.status_at, at),
            rolled_back_by=rollback.change_id,
        )
    return states


def in_flight(
    states: Mapping[str, ChangeState] | Iterable[ChangeState], now: datetime, within: timedelta
) -> tuple[InFlightChange, ...]:
    """Changes started no longer than ``within`` ago and not finished: the gate's input."""
    values = states.values() if isinstance(states, Mapping) else states
    return tuple(
        InFlightChange(
            change_id=s.change_id,
            service=s.service_id,
            environment=s.environment,
            started_at=s.started_at or s.first_at,
            summary=s.summary,
        )
        for s in sorted(values, key=lambda s: (s.first_at, s.change_id))
        if s.in_flight and now - (s.started_at or s.first_at) <= within
    )
