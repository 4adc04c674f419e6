"""Protobuf messages and config models -> the API's JSON shapes (pure).

Enums become lower-case words (``"triggered"``, ``"high"``), timestamps RFC 3339 strings
(``None`` when unset), empty strings ``None`` where the field is optional. Integration
keys are secrets: they are masked wherever they appear (services, alerts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import (
    alert_pb2,
    auth_pb2,
    heartbeat_service_pb2,
    incident_pb2,
    notification_pb2,
    oncall_service_pb2,
    silence_service_pb2,
)
from tocsin_common.config.model import (
    EscalationPolicy,
    NotificationRules,
    Service,
    TocsinConfig,
    User,
)

STATUSES = {
    incident_pb2.INCIDENT_STATUS_TRIGGERED: "triggered",
    incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED: "acknowledged",
    incident_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
}
STATUS_VALUES = {name: value for value, name in STATUSES.items()}
URGENCIES = {incident_pb2.URGENCY_HIGH: "high", incident_pb2.URGENCY_LOW: "low"}
URGENCY_VALUES = {name: value for value, name in URGENCIES.items()}
SEVERITIES = {
    alert_pb2.SEVERITY_CRITICAL: "critical",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_INFO: "info",
}
ROLES = {
    auth_pb2.ROLE_VIEWER: "viewer",
    auth_pb2.ROLE_RESPONDER: "responder",
    auth_pb2.ROLE_MANAGER: "manager",
    auth_pb2.ROLE_ADMIN: "admin",
}
ROLE_VALUES = {name: value for value, name in ROLES.items()}
KINDS = {
    auth_pb2.PRINCIPAL_KIND_USER: "user",
    auth_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT: "service_account",
    auth_pb2.PRINCIPAL_KIND_SERVICE: "service",
}
OUTCOMES = {
    notification_pb2.DELIVERY_OUTCOME_DELIVERED: "delivered",
    notification_pb2.DELIVERY_OUTCOME_RETRYING: "retrying",
    notification_pb2.DELIVERY_OUTCOME_FAILED: "failed",
    notification_pb2.DELIVERY_OUTCOME_DUPLICATE: "duplicate",
    notification_pb2.DELIVERY_OUTCOME_RATE_LIMITED: "rate_limited",
    notification_pb2.DELIVERY_OUTCOME_AWAITING_APPROVAL: "awaiting_approval",
    notification_pb2.DELIVERY_OUTCOME_REJECTED: "rejected",
}
OPS = {
    silence_service_pb2.Matcher.OP_EQUAL: "=",
    silence_service_pb2.Matcher.OP_NOT_EQUAL: "!=",
    silence_service_pb2.Matcher.OP_REGEX: "=~",
    silence_service_pb2.Matcher.OP_NOT_REGEX: "!~",
}
OP_VALUES = {name: value for value, name in OPS.items()}


def ts(value: Timestamp, present: bool = True) -> str | None:
    """RFC 3339 (UTC, 'Z'), or None when unset."""
    if not present or (value.seconds == 0 and value.nanos == 0):
        return None
    return iso(value.ToDatetime(tzinfo=UTC))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def opt(value: str) -> str | None:
    return value or None


def mask_key(key: str) -> str:
    """An integration key as shown: its last four characters only."""
    return "****" + key[-4:] if len(key) > 8 else "****"


def etag(incident: incident_pb2.Incident) -> str:
    """A validator of the incident's state: any change to a field of it changes the tag
    (status, urgency, assignment, snooze, alerts, suppression, ...). ``updated_at`` alone
    does not count: it moves with a note (and, applied by correlation for older builds,
    with levels reached and pages' outcomes), which change nothing a person decides on."""
    state = incident_pb2.Incident()
    state.CopyFrom(incident)
    state.ClearField("updated_at")
    digest = hashlib.sha256(state.SerializeToString(deterministic=True)).hexdigest()
    return f'"{digest[:32]}"'


def incident(message: incident_pb2.Incident) -> dict[str, Any]:
    return {
        "id": message.incident_id,
        "service_id": message.service_id,
        "title": message.title,
        "status": STATUSES.get(message.status, "triggered"),
        "urgency": URGENCIES.get(message.urgency),
        "severity": SEVERITIES.get(message.severity),
        "group_key": message.group_key,
        "escalation_policy_id": opt(message.escalation_policy_id),
        "assigned_user_id": opt(message.assigned_user_id),
        "alert_count": message.alert_count,
        "open_alert_count": message.open_alert_count,
        "created_at": ts(message.created_at, message.HasField("created_at")),
        "updated_at": ts(message.updated_at, message.HasField("updated_at")),
        "resolved_at": ts(message.resolved_at, message.HasField("resolved_at")),
        "snoozed_until": ts(message.snoozed_until, message.HasField("snoozed_until")),
        "dedup_keys": list(message.dedup_keys),
        "labels": dict(message.labels),
        "held_by_incident_id": opt(message.held_by_incident_id),
        "flapping": message.flapping,
        "suppressed": message.suppressed,
        "suppressed_reason": opt(message.suppressed_reason),
        "priority": opt(message.priority),
        "probable_causes": [
            {
                "rank": cause.rank,
                "reason": cause.reason,
                "change": change(cause.change),
            }
            for cause in message.probable_causes
        ],
        "impact": opt(message.impact),
        "etag": etag(message),
    }


EVENT_TYPES = {
    value: name.removeprefix("INCIDENT_EVENT_TYPE_").lower()
    for name, value in incident_pb2.IncidentEventType.items()
    if value
}


def alert(message: alert_pb2.Alert) -> dict[str, Any]:
    return {
        "id": message.event_id,
        "service_id": message.service_id,
        "integration_key": mask_key(message.integration_key) if message.integration_key else None,
        "dedup_key": message.dedup_key,
        "action": alert_pb2.AlertAction.Name(message.action).removeprefix("ALERT_ACTION_").lower(),
        "severity": SEVERITIES.get(message.severity),
        "summary": message.summary,
        "source": message.source,
        "component": opt(message.component),
        "group": opt(message.group),
        "class": opt(getattr(message, "class")),
        "labels": dict(message.labels),
        "details": MessageToDict(message.details) if message.HasField("details") else {},
        "links": [{"href": link.href, "text": link.text} for link in message.links],
        "source_time": ts(message.source_time, message.HasField("source_time")),
        "received_time": ts(message.received_time, message.HasField("received_time")),
    }


def log_entry(event: incident_pb2.IncidentEvent) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "type": EVENT_TYPES.get(event.type, "unspecified"),
        "at": ts(event.at, event.HasField("at")),
        "actor": event.actor,
        "message": event.message,
        "command_id": opt(event.command_id),
        "incident_status": STATUSES.get(event.incident.status, "triggered"),
        "alert_id": opt(event.alert.event_id) if event.HasField("alert") else None,
        "status_update": (
            {
                "status": event.status_update.status,
                "message": event.status_update.message,
                "public_title": event.status_update.public_title,
            }
            if event.HasField("status_update")
            else None
        ),
    }


def alerts_of(events: list[incident_pb2.IncidentEvent]) -> list[dict[str, Any]]:
    """The incident's alerts from its timeline: the latest event of each dedup key, in the
    order they joined."""
    latest: dict[str, alert_pb2.Alert] = {}
    for event in events:
        if event.HasField("alert") and event.alert.event_id:
            latest[event.alert.dedup_key or event.alert.event_id] = event.alert
    return [alert(a) for a in latest.values()]


def stream_event(event: incident_pb2.IncidentEvent) -> dict[str, Any]:
    """One SSE ``incident`` event's data: what happened, and the incident after it."""
    return {**log_entry(event), "incident": incident(event.incident)}


def delivery(status: notification_pb2.NotificationStatus) -> dict[str, Any]:
    return {
        "request_id": status.request_id,
        "incident_id": status.incident_id,
        "user_id": status.user_id,
        "contact_method_id": status.contact_method_id,
        "channel": status.channel,
        "outcome": OUTCOMES.get(status.outcome, "unspecified"),
        "attempt": status.attempt,
        "detail": status.detail,
        "at": ts(status.at, status.HasField("at")),
    }


def oncall(entry: oncall_service_pb2.OnCallEntry, policy_id: str = "") -> dict[str, Any]:
    return {
        "user_id": entry.user_id,
        "schedule_id": opt(entry.schedule_id),
        "escalation_policy_id": opt(policy_id),
        "escalation_level": entry.escalation_level or None,
        "start": ts(entry.start, entry.HasField("start")),
        "end": ts(entry.end, entry.HasField("end")),
    }


def override(message: oncall_service_pb2.Override) -> dict[str, Any]:
    return {
        "id": message.override_id,
        "schedule_id": message.schedule_id,
        "user_id": message.user_id,
        "start": ts(message.start, message.HasField("start")),
        "end": ts(message.end, message.HasField("end")),
        "created_by": opt(message.created_by),
        "from_config": message.from_config,
    }


def _enum_name(name: str, prefix: str) -> str | None:
    """``CHANGE_KIND_FEATURE_FLAG`` as ``feature_flag``; None for ``..._UNSPECIFIED``."""
    short = name.removeprefix(prefix).lower()
    return None if short == "unspecified" else short


def change(message: alert_pb2.ChangeEvent) -> dict[str, Any]:
    """A change event as the API shows it, with what it says of its change's life."""
    return {
        "id": message.event_id,
        "summary": message.summary,
        "source": message.source,
        "timestamp": ts(message.timestamp, message.HasField("timestamp")),
        "service_id": opt(message.service_id),
        "change_id": opt(message.change_id),
        "kind": _enum_name(alert_pb2.ChangeKind.Name(message.kind), "CHANGE_KIND_"),
        "status": _enum_name(alert_pb2.ChangeStatus.Name(message.status), "CHANGE_STATUS_"),
        "version": opt(message.version),
        "environment": opt(message.environment),
        "rollback_of": opt(message.rollback_of),
    }


def spans(messages: Iterable[oncall_service_pb2.ScheduleSpan]) -> list[dict[str, Any]]:
    return [
        {
            "start": ts(span.start, span.HasField("start")),
            "end": ts(span.end, span.HasField("end")),
            "user_ids": list(span.user_ids),
        }
        for span in messages
    ]


def matcher_text(message: silence_service_pb2.Matcher) -> str:
    value = message.value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{message.name}{OPS.get(message.op, "=")}"{value}"'


def silence(message: silence_service_pb2.Silence) -> dict[str, Any]:
    return {
        "id": message.silence_id,
        "service_id": opt(message.service_id),
        "matchers": [matcher_text(m) for m in message.matchers],
        "starts_at": ts(message.starts_at, message.HasField("starts_at")),
        "ends_at": ts(message.ends_at, message.HasField("ends_at")),
        "created_by": message.created_by,
        "comment": message.comment,
    }


def heartbeat(message: heartbeat_service_pb2.HeartbeatMonitor) -> dict[str, Any]:
    return {
        "id": message.heartbeat_id,
        "service_id": message.service_id,
        "interval_seconds": message.interval.ToTimedelta().total_seconds(),
        "grace_seconds": message.grace.ToTimedelta().total_seconds(),
        "last_ping_at": ts(message.last_ping_at, message.HasField("last_ping_at")),
        "down": message.down,
        "ping_url_issued": message.ping_url_issued,
    }


def token(info: auth_pb2.TokenInfo) -> dict[str, Any]:
    return {
        "id": info.token_id,
        "subject_id": info.subject_id,
        "subject_kind": KINDS.get(info.subject_kind, "user"),
        "name": info.name,
        "scope": ROLES.get(info.scope),
        "created_at": ts(info.created_at, info.HasField("created_at")),
        "expires_at": ts(info.expires_at, info.HasField("expires_at")),
        "last_used_at": ts(info.last_used_at, info.HasField("last_used_at")),
        "created_by": info.created_by,
    }


def audit_record(record: auth_pb2.AuditRecord) -> dict[str, Any]:
    return {
        "id": record.audit_id,
        "at": ts(record.at, record.HasField("at")),
        "actor": record.actor,
        "actor_kind": KINDS.get(record.actor_kind),
        "action": record.action,
        "resource_kind": record.resource_kind,
        "resource_id": record.resource_id,
        "allowed": record.allowed,
        "reason": record.reason,
        "service": record.service,
        "method": record.method,
        "trace_id": opt(record.trace_id),
    }


def principal(message: auth_pb2.Principal) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": KINDS.get(message.kind, "user"),
        "admin": message.admin,
        "team_roles": {tr.team_id: ROLES.get(tr.role, "viewer") for tr in message.team_roles},
        "scope": ROLES.get(message.scope),
    }


# --- config-owned resources -----------------------------------------------------------


def service(config: TocsinConfig, s: Service) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "team_id": s.team,
        "escalation_policy_id": s.escalation_policy,
        "depends_on": list(s.depends_on),
        "integrations": [
            {"key": mask_key(i.key), "type": i.type, "name": i.name} for i in s.integrations
        ],
        "heartbeat_ids": [h.id for h in config.heartbeats if h.service == s.id],
        "maintenance_windows": [
            {"start": iso(w.start), "end": iso(w.end), "description": w.description}
            for w in s.maintenance_windows
        ],
    }


def escalation_policy(policy: EscalationPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "repeat": policy.repeat,
        "levels": [
            {
                "delay_seconds": level.delay.total_seconds(),
                "targets": [{"type": t.type, "id": t.id} for t in level.targets],
            }
            for level in policy.levels
        ],
    }


def user(config: TocsinConfig, u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "time_zone": u.time_zone,
        "team_ids": [t.id for t in config.teams if u.id in t.members],
    }


def notification_rules(rules: NotificationRules) -> dict[str, Any]:
    return {
        urgency: [
            {"delay_seconds": r.delay.total_seconds(), "contact_method_id": r.contact_method}
            for r in getattr(rules, urgency)
        ]
        for urgency in ("high", "low")
    }
