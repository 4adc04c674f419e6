"""The facts insight keeps, and how events make them (pure: no I/O, no clock).

An incident's fact is a fold of its events on ``incidents.events`` and
``incidents.timeline``, in their order: ``fold_incident(fact_or_None, event, directory) ->
fact``. The two topics are read in no order relative to each other, so an entry that
changes no state (ESCALATED, NOTIFIED: :data:`TIMELINE_ONLY`) may be folded before the
incident's TRIGGERED or after a later acknowledgement: it never sets the status or the
title, and the opening alert's source and dedup key are taken from the first event that
has an alert. The store persists the result;
it never decides anything itself. A notification's fact is one delivery outcome on
``notifications.status``; a change's fact one record on ``changes``.

Bump :data:`DEFINITION_VERSION` when a change here alters what a fact holds for the same
events: the facts are then recomputed by replaying the topics into a new generation
(docs/insight-service.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common import validation
from tocsin_common.automation import CHANNEL as AUTOMATION_CHANNEL
from tocsin_common.change import lifecycle
from tocsin_common.statuspage.notices import CHANNELS as STATUS_CHANNELS

# 2: change facts carry their change id, kind, status, version, environment and rollback_of
# (the deploy gate's changes in flight and a change's timeline read them).
# 2 (another branch, merged): the entries that change no state (escalation's levels reached,
# on incidents.timeline now) do not set an incident's status or title; a TRIGGERED folded
# after one of them still gives the source and dedup key.
# 3: both of the above together.
# 4: incident facts keep the labels of the alert that opened the incident (capped), what an
# automation rule's matchers see (the automation dry run, docs/automation.md#dry-run).
DEFINITION_VERSION = 4

E = incident_pb2

# Actors that are not people: the alert's source, timers, Tocsin's own services.
MACHINE_ACTORS = frozenset(
    {"", "source", "system", "correlation", "escalation", "notification", "alert-ingest", "insight"}
)

SEVERITY_NAMES = {
    alert_pb2.SEVERITY_INFO: "info",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_CRITICAL: "critical",
}
# The labels an incident fact keeps (SPEC §10: every user-supplied collection is capped):
# alert-ingest refuses more or longer ones, so an incident from it keeps all of its labels;
# beyond the caps (a record from elsewhere) a label too long is left out, and past
# MAX_LABELS labels in name order the rest.
MAX_LABELS = validation.MAX_LABELS
MAX_LABEL_NAME = validation.MAX_LABEL_NAME
MAX_LABEL_VALUE = validation.MAX_LABEL_VALUE
# Impact levels an incident may carry in its `impact` label (availability weights).
IMPACT_LEVELS = ("major", "partial", "degraded")

_LEVEL = re.compile(r"escalated to level (\d+)")
# Entries that record something without changing the incident (levels reached, pages'
# outcomes): their incident snapshot may be older than the fact.
TIMELINE_ONLY = frozenset({E.INCIDENT_EVENT_TYPE_ESCALATED, E.INCIDENT_EVENT_TYPE_NOTIFIED})
# Events that end a snooze early (a snooze otherwise runs until its `snoozed_until`).
_SNOOZE_ENDERS = frozenset(
    {
        E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
        E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED,
        E.INCIDENT_EVENT_TYPE_RESOLVED,
        E.INCIDENT_EVENT_TYPE_REASSIGNED,
        E.INCIDENT_EVENT_TYPE_SNOOZED,
    }
)


class FactError(ValueError):
    """A record that cannot become a fact (names the field and the problem)."""


def is_person(actor: str) -> bool:
    """Whether ``actor`` is a person (not the source, a timer or a Tocsin service)."""
    return actor not in MACHINE_ACTORS and not actor.startswith("service:")


def event_type_name(kind: int) -> str:
    """``INCIDENT_EVENT_TYPE_ACKNOWLEDGED`` -> ``acknowledged``."""
    return E.IncidentEventType.Name(kind).removeprefix("INCIDENT_EVENT_TYPE_").lower()  # type: ignore[arg-type]


def _ts(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


PriorityOf = Callable[[str, str, str, Mapping[str, str]], str]


@dataclass(frozen=True)
class Directory:
    """What the fold needs from the config: a service's team, a person's time zone, and an
    incident's priority (``insight.priorities``: service, severity, urgency, labels of the
    alert that opened it -> the first matching rule's id, "" when none matches)."""

    team_of: Callable[[str], str] = lambda service_id: ""
    zone_of: Callable[[str], str] = lambda user_id: "UTC"
    priority_of: PriorityOf = lambda service, severity, urgency, labels: ""


@dataclass(frozen=True)
class IncidentFact:
    incident_id: str
    service_id: str
    team_id: str
    title: str
    urgency: str
    severity: str
    priority: str
    group_key: str
    dedup_key: str
    source: str
    status: str
    created_at: datetime
    updated_at: datetime
    first_ack_at: datetime | None = None
    first_ack_by: str = ""
    first_engaged_at: datetime | None = None  # the first person's acknowledgement
    last_engaged_at: datetime | None = None  # the first ack of the last person to engage
    engaged_users: tuple[str, ...] = ()  # people who acknowledged, in order
    resolved_at: datetime | None = None
    resolved_by: str = ""
    auto_resolved: bool = False
    escalation_count: int = 0
    max_level: int = 0
    reassignments: int = 0
    snoozed_seconds: float = 0.0
    snoozed_since: datetime | None = None
    snoozed_until: datetime | None = None
    alert_count: int = 0
    suppressed_alerts: int = 0
    suppressed: bool = False
    suppression_kind: str = ""
    held: bool = False
    flapping: bool = False
    linked_changes: tuple[str, ...] = ()
    impact: str = ""
    impact_start: datetime | None = None
    impact_end: datetime | None = None
    event_count: int = 0
    labels: tuple[tuple[str, str], ...] = ()  # (name, value) in name order, capped_labels()

    @property
    def seconds_to_first_ack(self) -> float | None:
        if self.first_ack_at is None:
            return None
        return max(0.0, (self.first_ack_at - self.created_at).total_seconds())

    @property
    def seconds_to_engage(self) -> float | None:
        """First person's engagement to the last one's (two or more people)."""
        if len(self.engaged_users) < 2 or self.first_engaged_at is None:
            return None
        assert self.last_engaged_at is not None
        return (self.last_engaged_at - self.first_engaged_at).total_seconds()

    @property
    def seconds_to_resolve(self) -> float | None:
        if self.resolved_at is None:
            return None
        return max(0.0, (self.resolved_at - self.created_at).total_seconds())


COLUMNS: tuple[str, ...] = tuple(IncidentFact.__dataclass_fields__)


def _label_time(labels: Mapping[str, str], name: str) -> datetime | None:
    raw = labels.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def capped_labels(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The labels a fact keeps, in name order: none longer than the caps, at most
    :data:`MAX_LABELS`."""
    kept = (
        (name, value)
        for name, value in sorted(labels.items())
        if len(name) <= MAX_LABEL_NAME and len(value) <= MAX_LABEL_VALUE
    )
    return tuple(kept)[:MAX_LABELS]


def suppression_kind(reason: str) -> str:
    """maintenance | silence | inhibition, from correlation's suppressed_reason."""
    text = reason.lower()
    if "maintenance" in text:
        return "maintenance"
    if "silence" in text:
        return "silence"
    if "inhibit" in text:
        return "inhibition"
    return "other" if text else ""


def _status(incident: incident_pb2.Incident) -> str:
    return {
        E.INCIDENT_STATUS_TRIGGERED: "triggered",
        E.INCIDENT_STATUS_ACKNOWLEDGED: "acknowledged",
        E.INCIDENT_STATUS_RESOLVED: "resolved",
    }.get(incident.status, "triggered")


def _new_fact(event: incident_pb2.IncidentEvent, directory: Directory) -> IncidentFact:
    incident = event.incident
    at = _ts(event.at) if event.HasField("at") else _ts(incident.created_at)
    created = _ts(incident.created_at) if incident.HasField("created_at") else at
    severity = SEVERITY_NAMES.get(incident.severity, "unspecified")
    return IncidentFact(
        incident_id=incident.incident_id,
        service_id=incident.service_id,
        team_id=directory.team_of(incident.service_id),
        title=incident.title,
        urgency="low" if incident.urgency == E.URGENCY_LOW else "high",
        severity=severity,
        # A priority set by a command wins over the one insight.priorities derives.
        priority=incident.priority
        or directory.priority_of(
            incident.service_id,
            severity,
            "low" if incident.urgency == E.URGENCY_LOW else "high",
            incident.labels,
        ),
        group_key=incident.group_key,
        dedup_key=event.alert.dedup_key or (incident.dedup_keys[0] if incident.dedup_keys else ""),
        source=event.alert.source,
        status="triggered",
        created_at=created,
        updated_at=at,
    )


def fold_incident(
    fact: IncidentFact | None, event: incident_pb2.IncidentEvent, directory: Directory
) -> IncidentFact:
    """The incident's fact after ``event`` (``fact`` is what its earlier events made)."""
    incident = event.incident
    if not incident.incident_id:
        raise FactError("incident.incident_id: is empty")
    if not event.HasField("at"):
        raise FactError("at: is not set")
    if fact is not None and fact.incident_id != incident.incident_id:
        raise FactError(
            f"incident.incident_id: {incident.incident_id!r} folded into {fact.incident_id!r}"
        )
    at = _ts(event.at)
    kind = event.type
    current = fact if fact is not None else _new_fact(event, directory)
    changes: dict[str, object] = {
        "updated_at": max(current.updated_at, at),
        "event_count": current.event_count + 1,
        "alert_count": max(current.alert_count, incident.alert_count),
        "held": current.held or bool(incident.held_by_incident_id),
        "flapping": current.flapping or incident.flapping,
    }
    if kind not in TIMELINE_ONLY:
        changes["status"] = _status(incident)
        changes["title"] = incident.title or current.title
        if incident.priority:
            changes["priority"] = incident.priority
    if kind == E.INCIDENT_EVENT_TYPE_TRIGGERED and fact is not None and not current.source:
        # The fact was made from an entry folded first, without the opening alert.
        changes["source"] = event.alert.source
        changes["dedup_key"] = event.alert.dedup_key or current.dedup_key
    if incident.labels and not current.labels:
        # The opening alert's (an entry folded first may carry none)
        changes["labels"] = capped_labels(incident.labels)
    if incident.probable_causes and not current.linked_changes:
        changes["linked_changes"] = tuple(
            c.change.event_id for c in incident.probable_causes if c.change.event_id
        )
    if incident.suppressed and not current.suppressed:
        changes["suppressed"] = True
        changes["suppression_kind"] = suppression_kind(incident.suppressed_reason)
    elif incident.held_by_incident_id and not current.suppression_kind:
        changes["suppression_kind"] = "dependency"  # held by an upstream incident
    if kind == E.INCIDENT_EVENT_TYPE_SUPPRESSED or (
        kind == E.INCIDENT_EVENT_TYPE_ALERT_ADDED and incident.suppressed
    ):
        changes["suppressed_alerts"] = current.suppressed_alerts + 1
    impact = incident.labels.get("impact", "").strip().lower()
    if impact in IMPACT_LEVELS and not current.impact:
        changes["impact"] = impact
        changes["impact_start"] = _label_time(incident.labels, "impact_start") or current.created_at
    # A snooze ends at its snoozed_until (escalation then sends UNACKNOWLEDGED) or earlier,
    # by an acknowledgement, a resolve, a reassign or another snooze: count what was used.
    if current.snoozed_since is not None and kind in _SNOOZE_ENDERS:
        end = min(at, current.snoozed_until or at)
        used = max(0.0, (end - current.snoozed_since).total_seconds())
        changes["snoozed_seconds"] = current.snoozed_seconds + used
        changes["snoozed_since"] = None
        changes["snoozed_until"] = None
    # A person's acknowledgement is their engagement (docs/insight.md#response): the
    # first one of each person counts, in the order they came.
    if (
        kind == E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED
        and is_person(event.actor)
        and event.actor not in current.engaged_users
    ):
        changes["engaged_users"] = (*current.engaged_users, event.actor)
        changes["last_engaged_at"] = at
        if current.first_engaged_at is None:
            changes["first_engaged_at"] = at
    if kind == E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED and current.first_ack_at is None:
        changes["first_ack_at"] = at
        changes["first_ack_by"] = event.actor
    elif kind == E.INCIDENT_EVENT_TYPE_RESOLVED and current.resolved_at is None:
        changes["resolved_at"] = at
        changes["resolved_by"] = event.actor
        changes["auto_resolved"] = not is_person(event.actor)
        if current.impact or "impact" in changes:
            changes["impact_end"] = _label_time(incident.labels, "impact_end") or at
    elif kind == E.INCIDENT_EVENT_TYPE_ESCALATED:
        changes["escalation_count"] = current.escalation_count + 1
        found = _LEVEL.search(event.message)
        if found:
            changes["max_level"] = max(current.max_level, int(found.group(1)))
    elif kind == E.INCIDENT_EVENT_TYPE_REASSIGNED:
        changes["reassignments"] = current.reassignments + 1
    elif kind == E.INCIDENT_EVENT_TYPE_SNOOZED:
        until = _ts(incident.snoozed_until) if incident.HasField("snoozed_until") else at
        changes["snoozed_since"] = at
        changes["snoozed_until"] = until
    return replace(current, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Notifications and changes
# ---------------------------------------------------------------------------------------------

OUTCOME_NAMES = {
    notification_pb2.DELIVERY_OUTCOME_DELIVERED: "delivered",
    notification_pb2.DELIVERY_OUTCOME_RETRYING: "retrying",
    notification_pb2.DELIVERY_OUTCOME_FAILED: "failed",
    notification_pb2.DELIVERY_OUTCOME_DUPLICATE: "duplicate",
    notification_pb2.DELIVERY_OUTCOME_RATE_LIMITED: "rate_limited",
}


@dataclass(frozen=True)
class NotificationFact:
    request_id: str
    attempt: int
    outcome: str
    incident_id: str
    user_id: str
    contact_method_id: str
    channel: str
    at: datetime
    time_zone: str
    local_at: datetime  # naive: the wall-clock time in time_zone
    hour_class: str = ""

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def is_page(status: notification_pb2.NotificationStatus) -> bool:
    """Whether a status is a page's: an automation action's (docs/automation.md) and a
    status page subscriber's delivery (docs/status-page.md) page nobody and stay out of
    the paging facts."""
    return status.channel != AUTOMATION_CHANNEL and status.channel not in STATUS_CHANNELS


def notification_fact(
    status: notification_pb2.NotificationStatus,
    directory: Directory,
    hour_class: Callable[[datetime, str], str] | None = None,
) -> NotificationFact:
    """One delivery outcome; ``hour_class(at, zone)`` classes it (business/off/sleep)."""
    if not status.request_id:
        raise FactError("request_id: is empty")
    if not status.HasField("at"):
        raise FactError("at: is not set")
    at = _ts(status.at)
    zone_name = directory.zone_of(status.user_id) or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone_name, zone = "UTC", ZoneInfo("UTC")
    local = at.astimezone(zone)
    return NotificationFact(
        request_id=status.request_id,
        attempt=status.attempt,
        outcome=OUTCOME_NAMES.get(status.outcome, "unspecified"),
        incident_id=status.incident_id,
        user_id=status.user_id,
        contact_method_id=status.contact_method_id,
        channel=status.channel,
        at=at,
        time_zone=zone_name,
        local_at=local.replace(tzinfo=None),
        hour_class=hour_class(at, zone_name) if hour_class else "",
    )


@dataclass(frozen=True)
class ChangeFact:
    event_id: str
    service_id: str
    team_id: str
    summary: str
    source: str
    at: datetime
    received_at: datetime | None = field(default=None)
    # The change lifecycle's fields (tocsin_common/change/lifecycle.py): kind and status as
    # its names ("unspecified" when not reported), the rest "" when not reported.
    change_id: str = ""
    kind: str = "unspecified"
    status: str = "unspecified"
    version: str = ""
    environment: str = ""
    rollback_of: str = ""


def change_fact(change: alert_pb2.ChangeEvent, directory: Directory) -> ChangeFact:
    if not change.event_id:
        raise FactError("event_id: is empty")
    received = _ts(change.received_time) if change.HasField("received_time") else None
    if change.HasField("timestamp"):
        at = _ts(change.timestamp)
    elif received is not None:
        at = received
    else:
        raise FactError("timestamp: is not set (nor received_time)")
    return ChangeFact(
        event_id=change.event_id,
        service_id=change.service_id,
        team_id=directory.team_of(change.service_id),
        summary=change.summary,
        source=change.source,
        at=at,
        received_at=received,
        change_id=change.change_id,
        kind=lifecycle.kind_name(change.kind),
        status=lifecycle.status_name(change.status),
        version=change.version,
        environment=change.environment,
        rollback_of=change.rollback_of,
    )
