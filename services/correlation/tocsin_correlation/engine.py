"""The correlation engine: alert events and commands in, incident events out (pure).

State is three mappings, which the faust worker backs with changelog tables and unit
tests with dicts:
- alerts:    alert_key(service, dedup key) -> AlertState JSON
- incidents: incident id -> IncidentState JSON
- groups:    service + group key -> id of the open incident taking that group's alerts

Ids of incidents and events are derived from the input event's id, so reprocessing the
same input after a crash (at-least-once) yields the same ids and downstream can dedup.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.config import TocsinConfig
from tocsin_common.timeutil import set_timestamp

from tocsin_correlation import grouping
from tocsin_correlation.dedup import AlertState, AlertStatus, Decision, alert_key, decide

_NAMESPACE = uuid.UUID("6f1c3c1e-3f5e-4d5c-9a55-7c0e8a3b9d10")

_ACTIONS = {
    alert_pb2.ALERT_ACTION_TRIGGER: "trigger",
    alert_pb2.ALERT_ACTION_ACKNOWLEDGE: "acknowledge",
    alert_pb2.ALERT_ACTION_RESOLVE: "resolve",
}
_SEVERITY_NAMES = {
    alert_pb2.SEVERITY_CRITICAL: "critical",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_INFO: "info",
}
_STATUS = {
    "triggered": incident_pb2.INCIDENT_STATUS_TRIGGERED,
    "acknowledged": incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED,
    "resolved": incident_pb2.INCIDENT_STATUS_RESOLVED,
}


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


@dataclass
class IncidentState:
    incident_id: str
    service_id: str
    title: str
    status: str
    urgency: str
    severity: int
    group_key: str
    escalation_policy_id: str
    created_at: float
    updated_at: float
    alert_keys: list[str] = field(default_factory=list)
    open_alert_keys: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    resolved_at: float | None = None
    assigned_user_id: str = ""
    snoozed_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IncidentState:
        return cls(**data)

    def to_proto(self) -> incident_pb2.Incident:
        incident = incident_pb2.Incident(
            incident_id=self.incident_id,
            service_id=self.service_id,
            title=self.title,
            status=_STATUS[self.status],
            urgency=incident_pb2.URGENCY_HIGH
            if self.urgency == "high"
            else incident_pb2.URGENCY_LOW,
            severity=self.severity,  # type: ignore[arg-type]
            group_key=self.group_key,
            escalation_policy_id=self.escalation_policy_id,
            alert_count=len(self.alert_keys),
            open_alert_count=len(self.open_alert_keys),
            dedup_keys=[k.split("\x1f", 1)[1] for k in self.alert_keys],
            labels=self.labels,
            assigned_user_id=self.assigned_user_id,
        )
        set_timestamp(incident.created_at, _dt(self.created_at))
        set_timestamp(incident.updated_at, _dt(self.updated_at))
        if self.resolved_at is not None:
            set_timestamp(incident.resolved_at, _dt(self.resolved_at))
        if self.snoozed_until is not None:
            set_timestamp(incident.snoozed_until, _dt(self.snoozed_until))
        return incident


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class Outcome:
    """What one input did: the incident events to publish, and what to count."""

    events: list[incident_pb2.IncidentEvent] = field(default_factory=list)
    dropped: str | None = None  # why the input changed nothing, for metrics


class CorrelationEngine:
    def __init__(
        self,
        alerts: MutableMapping[str, Any],
        incidents: MutableMapping[str, Any],
        groups: MutableMapping[str, Any],
    ) -> None:
        self.alerts = alerts
        self.incidents = incidents
        self.groups = groups

    # --- alerts ---------------------------------------------------------------------

    def on_alert(self, alert: alert_pb2.Alert, config: TocsinConfig, now: float) -> Outcome:
        try:
            config.service(alert.service_id)
        except KeyError:
            return Outcome(dropped="unknown_service")  # removed from the config since ingest
        key = alert_key(alert.service_id, alert.dedup_key)
        raw = self.alerts.get(key)
        existing = AlertState.from_json(raw) if raw else None
        action = _ACTIONS.get(alert.action, "")
        if existing is not None and existing.is_open and existing.incident_id not in self.incidents:
            existing = None  # its incident is gone (state lost): start afresh, never drop
        decision = decide(existing, action)
        if decision is Decision.DROP:
            return Outcome(dropped=f"{action}_without_open_alert")
        if decision is Decision.NEW:
            return self._new_alert(alert, key, config, now)
        assert existing is not None
        incident = IncidentState.from_json(self.incidents[existing.incident_id])
        existing.last_seen = now
        if decision is Decision.DUPLICATE:
            existing.count += 1
            self.alerts[key] = existing.to_json()
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
                alert,
                now,
                f"alert repeated ({existing.count} times)",
            )
        if decision is Decision.ACKNOWLEDGE:
            existing.status = AlertStatus.ACKNOWLEDGED
            self.alerts[key] = existing.to_json()
            if incident.status == "triggered":
                incident.status = "acknowledged"
                return self._emit(
                    incident,
                    incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
                    alert,
                    now,
                    "acknowledged by the source",
                )
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
                alert,
                now,
                "alert acknowledged by the source",
            )
        # RESOLVE
        existing.status = AlertStatus.RESOLVED
        self.alerts[key] = existing.to_json()
        if key in incident.open_alert_keys:
            incident.open_alert_keys.remove(key)
        if not incident.open_alert_keys and incident.status != "resolved":
            return self._resolve(incident, alert, now, "all alerts resolved", actor="source")
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
            alert,
            now,
            "alert resolved by the source",
        )

    def _new_alert(
        self, alert: alert_pb2.Alert, key: str, config: TocsinConfig, now: float
    ) -> Outcome:
        service = config.service(alert.service_id)
        gkey = grouping.group_key(alert, service.grouping.mode, service.grouping.fields)
        slot = f"{alert.service_id}\x1f{gkey}"
        incident_id = self.groups.get(slot)
        raw_incident = self.incidents.get(incident_id) if incident_id else None
        incident = IncidentState.from_json(raw_incident) if raw_incident else None
        window = (
            service.grouping.window.total_seconds() if service.grouping.mode != "none" else None
        )
        state = AlertState(
            alert_id=derived_id(alert.event_id, "alert"),
            incident_id="",
            status=AlertStatus.TRIGGERED,
            count=1,
            first_seen=now,
            last_seen=now,
        )
        if (
            incident is not None
            and incident.status != "resolved"
            and grouping.joins_open_incident(incident.created_at, now, window)
        ):
            state.incident_id = incident.incident_id
            incident.alert_keys.append(key)
            incident.open_alert_keys.append(key)
            self.alerts[key] = state.to_json()
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_ADDED,
                alert,
                now,
                f"alert joined: {alert.summary}",
            )
        severity = _SEVERITY_NAMES.get(alert.severity)  # None: the service's default urgency
        incident = IncidentState(
            incident_id=derived_id(alert.event_id, "incident"),
            service_id=alert.service_id,
            title=alert.summary,
            status="triggered",
            urgency=service.urgency.for_severity(severity),
            severity=int(alert.severity),
            group_key=gkey,
            escalation_policy_id=service.escalation_policy,
            created_at=now,
            updated_at=now,
            alert_keys=[key],
            open_alert_keys=[key],
            labels=dict(alert.labels),
        )
        state.incident_id = incident.incident_id
        self.alerts[key] = state.to_json()
        self.groups[slot] = incident.incident_id
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED,
            alert,
            now,
            f"triggered: {alert.summary}",
        )

    # --- commands -------------------------------------------------------------------

    def on_command(self, command: incident_pb2.IncidentCommand, now: float) -> Outcome:
        raw = self.incidents.get(command.incident_id)
        if raw is None:
            return Outcome(dropped="unknown_incident")
        incident = IncidentState.from_json(raw)
        kind = command.WhichOneof("command")
        if incident.status == "resolved" and kind != "note":
            return Outcome(dropped="incident_resolved")
        if kind == "acknowledge":
            if incident.status == "acknowledged":
                return Outcome(dropped="already_acknowledged")
            incident.status = "acknowledged"
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
                None,
                now,
                f"acknowledged by {command.actor}",
                actor=command.actor,
                command_id=command.command_id,
            )
        if kind == "resolve":
            return self._resolve(
                incident,
                None,
                now,
                f"resolved by {command.actor}",
                actor=command.actor,
                command_id=command.command_id,
            )
        if kind == "note":
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED,
                None,
                now,
                command.note.text,
                actor=command.actor,
                command_id=command.command_id,
            )
        if kind == "reassign":
            target = command.reassign.escalation_policy_id or f"user:{command.reassign.user_id}"
            if command.reassign.escalation_policy_id:
                incident.escalation_policy_id = command.reassign.escalation_policy_id
            incident.assigned_user_id = command.reassign.user_id
            incident.status = "triggered"  # escalation starts over on the new assignee
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_REASSIGNED,
                None,
                now,
                f"reassigned to {target} by {command.actor}",
                actor=command.actor,
                command_id=command.command_id,
            )
        if kind == "snooze":
            until = command.snooze.until.ToDatetime(tzinfo=UTC)
            incident.status = "acknowledged"  # as in PagerDuty: snoozing acknowledges
            incident.snoozed_until = until.timestamp()
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_SNOOZED,
                None,
                now,
                f"snoozed until {until.isoformat()} by {command.actor}",
                actor=command.actor,
                command_id=command.command_id,
            )
        return Outcome(dropped=f"unsupported_command_{kind}")

    # --- helpers --------------------------------------------------------------------

    def _resolve(
        self,
        incident: IncidentState,
        alert: alert_pb2.Alert | None,
        now: float,
        message: str,
        actor: str,
        command_id: str = "",
    ) -> Outcome:
        incident.status = "resolved"
        incident.resolved_at = now
        for key in incident.open_alert_keys:
            raw = self.alerts.get(key)
            if raw:
                state = AlertState.from_json(raw)
                state.status = AlertStatus.RESOLVED
                self.alerts[key] = state.to_json()
        incident.open_alert_keys = []
        slot = f"{incident.service_id}\x1f{incident.group_key}"
        if self.groups.get(slot) == incident.incident_id:
            del self.groups[slot]
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_RESOLVED,
            alert,
            now,
            message,
            actor=actor,
            command_id=command_id,
        )

    def _emit(
        self,
        incident: IncidentState,
        event_type: int,
        alert: alert_pb2.Alert | None,
        now: float,
        message: str,
        *,
        actor: str = "",
        command_id: str = "",
    ) -> Outcome:
        incident.updated_at = now
        self.incidents[incident.incident_id] = incident.to_json()
        cause = alert.event_id if alert is not None else command_id
        event = incident_pb2.IncidentEvent(
            event_id=derived_id(cause, incident.incident_id, str(event_type)),
            type=event_type,  # type: ignore[arg-type]
            incident=incident.to_proto(),
            actor=actor or ("source" if alert is not None else "system"),
            message=message,
            command_id=command_id,
        )
        if alert is not None:
            event.alert.CopyFrom(alert)
        set_timestamp(event.at, _dt(now))
        return Outcome(events=[event])
