"""PagerDuty Events API v2: validation and normalization of one event (pure, no I/O).

Reference: PagerDuty's "Send an Alert Event" (POST /v2/enqueue) and "Send a Change Event"
(POST /v2/change/enqueue). Limits as PagerDuty's: dedup_key at most 255 characters,
payload.summary at most 1024.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tocsin.v1 import alert_pb2
from tocsin_common import validation
from tocsin_common.timeutil import set_timestamp
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import fields
from tocsin_ingest.fields import MAX_DEDUP_KEY, MAX_SUMMARY, SEVERITIES

__all__ = [
    "ACTIONS",
    "MAX_DEDUP_KEY",
    "MAX_SUMMARY",
    "SEVERITIES",
    "Accepted",
    "default_dedup_key",
    "normalize",
    "normalize_change",
    "parse_event",
]

MAX_LINKS = 100
MAX_IMAGES = 100

ACTIONS = {
    "trigger": alert_pb2.ALERT_ACTION_TRIGGER,
    "acknowledge": alert_pb2.ALERT_ACTION_ACKNOWLEDGE,
    "resolve": alert_pb2.ALERT_ACTION_RESOLVE,
}


@dataclass(frozen=True)
class Accepted:
    routing_key: str
    alert: alert_pb2.Alert


def default_dedup_key(service_id: str, summary: str, source: str) -> str:
    """Identical alerts dedup by default: a hash of service, summary and source."""
    digest = hashlib.sha256(f"{service_id}\x1f{summary}\x1f{source}".encode()).hexdigest()
    return digest[:32]


def parse_event(body: Any) -> tuple[str, dict[str, Any], list[FieldError]]:
    """First pass: the routing key and the body as a mapping (for authentication)."""
    if not isinstance(body, dict):
        return "", {}, [FieldError("(body)", "must be a JSON object")]
    errors: list[FieldError] = []
    routing_key = fields.string(body, "routing_key", "routing_key", errors, required=True)
    return routing_key, body, errors


def normalize(
    body: dict[str, Any], service_id: str, received_at: datetime, integration_key: str = ""
) -> alert_pb2.Alert:
    """Validate a v2 event whose routing key was already resolved to `service_id`.

    Raises InvalidInput listing every problem found. (Hot path: the fields are validated
    into plain values first and the Alert is built once, only with what is set.)
    """
    errors: list[FieldError] = []
    action_name = fields.string(body, "event_action", "event_action", errors, required=True)
    action = ACTIONS.get(action_name)
    if action_name and action is None:
        errors.append(FieldError("event_action", f"must be one of {', '.join(ACTIONS)}"))
    dedup_key = fields.string(body, "dedup_key", "dedup_key", errors, max_len=MAX_DEDUP_KEY)
    if (
        action in (alert_pb2.ALERT_ACTION_ACKNOWLEDGE, alert_pb2.ALERT_ACTION_RESOLVE)
        and not dedup_key
    ):
        errors.append(FieldError("dedup_key", f"is required for {action_name}"))

    values: dict[str, Any] = {
        "event_id": fields.event_id(),
        "service_id": service_id,
        "action": action or alert_pb2.ALERT_ACTION_UNSPECIFIED,
        "source_format": alert_pb2.SOURCE_FORMAT_EVENTS_V2,
    }
    if integration_key:
        values["integration_key"] = integration_key
    client = fields.string(body, "client", "client", errors)
    if client:
        values["client"] = client
    client_url = fields.string(body, "client_url", "client_url", errors)
    if client_url:
        values["client_url"] = client_url
    links = _links(body, errors)
    images = _images(body, errors)

    parsed = _Payload()
    payload = body.get("payload")
    if action == alert_pb2.ALERT_ACTION_TRIGGER:
        if not isinstance(payload, dict):
            errors.append(FieldError("payload", "is required for trigger and must be an object"))
        else:
            parsed = _payload(payload, errors)
    elif payload is not None and not isinstance(payload, dict):
        errors.append(FieldError("payload", "must be an object"))
    if errors:
        raise InvalidInput(errors)
    values["dedup_key"] = dedup_key or default_dedup_key(service_id, parsed.summary, parsed.source)
    values.update(parsed.values)
    alert = alert_pb2.Alert(**values)
    fields.set_time(alert.received_time, received_at)
    fields.set_time(alert.source_time, parsed.source_time or received_at)
    for href, text in links:
        alert.links.add(href=href, text=text)
    for src, href, alt in images:
        alert.images.add(src=src, href=href, alt=alt)
    if parsed.labels:
        alert.labels.update(parsed.labels)
    if parsed.details is not None:
        alert.details.CopyFrom(parsed.details)
    too_big = fields.alert_size_problem(alert)
    if too_big is not None:
        raise InvalidInput([too_big])
    return alert


def normalize_change(
    body: dict[str, Any], service_id: str, received_at: datetime
) -> alert_pb2.ChangeEvent:
    """Validate a v2 change event (POST /v2/change/enqueue); raises InvalidInput."""
    errors: list[FieldError] = []
    change = alert_pb2.ChangeEvent(event_id=str(uuid.uuid4()), service_id=service_id)
    set_timestamp(change.received_time, received_at)
    for href, text in _links(body, errors):
        change.links.add(href=href, text=text)
    payload = body.get("payload")
    if not isinstance(payload, dict):
        errors.append(FieldError("payload", "is required and must be an object"))
    else:
        change.summary = fields.string(
            payload, "summary", "payload.summary", errors, required=True, max_len=MAX_SUMMARY
        )
        change.source = fields.string(payload, "source", "payload.source", errors)
        when = fields.timestamp(payload, "timestamp", "payload.timestamp", errors)
        if when is not None:
            set_timestamp(change.timestamp, when)
        details = _custom_details(payload, errors)
        if details is not None:
            change.details.CopyFrom(details)
        _lifecycle(payload, change, errors)
    if not errors and change.ByteSize() > validation.MAX_ALERT_BYTES:
        errors.append(
            FieldError(
                "(event)",
                f"is {change.ByteSize():,} bytes once normalized; "
                f"at most {validation.MAX_ALERT_BYTES:,} allowed",
            )
        )
    if errors:
        raise InvalidInput(errors)
    if not change.HasField("timestamp"):
        change.timestamp.CopyFrom(change.received_time)
    return change


CHANGE_KINDS = {
    "deploy": alert_pb2.CHANGE_KIND_DEPLOY,
    "rollback": alert_pb2.CHANGE_KIND_ROLLBACK,
    "config": alert_pb2.CHANGE_KIND_CONFIG,
    "feature_flag": alert_pb2.CHANGE_KIND_FEATURE_FLAG,
}
CHANGE_STATUSES = {
    "started": alert_pb2.CHANGE_STATUS_STARTED,
    "succeeded": alert_pb2.CHANGE_STATUS_SUCCEEDED,
    "failed": alert_pb2.CHANGE_STATUS_FAILED,
    "rolled_back": alert_pb2.CHANGE_STATUS_ROLLED_BACK,
}
MAX_CHANGE_ID = 255
MAX_VERSION = 255
MAX_ENVIRONMENT = 64


def _lifecycle(
    payload: dict[str, Any], change: alert_pb2.ChangeEvent, errors: list[FieldError]
) -> None:
    """Tocsin's extensions of a change event (docs/change-control.md#change-events): the
    change it belongs to, its kind, status, version, environment and what it rolls back."""
    change_id = fields.string(
        payload, "change_id", "payload.change_id", errors, max_len=MAX_CHANGE_ID
    )
    kind_name = fields.string(payload, "kind", "payload.kind", errors)
    kind = CHANGE_KINDS.get(kind_name)
    if kind_name and kind is None:
        errors.append(FieldError("payload.kind", f"must be one of {', '.join(CHANGE_KINDS)}"))
    status_name = fields.string(payload, "status", "payload.status", errors)
    status = CHANGE_STATUSES.get(status_name)
    if status_name and status is None:
        errors.append(FieldError("payload.status", f"must be one of {', '.join(CHANGE_STATUSES)}"))
    if status is not None and not change_id:
        errors.append(
            FieldError(
                "payload.change_id",
                "is required with a status (the events of one change share its change_id)",
            )
        )
    rollback_of = fields.string(
        payload, "rollback_of", "payload.rollback_of", errors, max_len=MAX_CHANGE_ID
    )
    if kind == alert_pb2.CHANGE_KIND_ROLLBACK and not rollback_of:
        errors.append(
            FieldError("payload.rollback_of", "is required for a rollback: the change it undoes")
        )
    elif rollback_of and kind != alert_pb2.CHANGE_KIND_ROLLBACK:
        errors.append(FieldError("payload.rollback_of", "only a change of kind rollback has one"))
    elif rollback_of and rollback_of == change_id:
        errors.append(FieldError("payload.rollback_of", "names the change itself"))
    version = fields.string(payload, "version", "payload.version", errors, max_len=MAX_VERSION)
    environment = fields.string(
        payload, "environment", "payload.environment", errors, max_len=MAX_ENVIRONMENT
    )
    change.change_id = change_id
    change.kind = kind or alert_pb2.CHANGE_KIND_UNSPECIFIED
    change.status = status or alert_pb2.CHANGE_STATUS_UNSPECIFIED
    change.rollback_of = rollback_of
    change.version = version
    change.environment = environment


def _custom_details(payload: dict[str, Any], errors: list[FieldError]) -> Any:
    details = payload.get("custom_details")
    if details is None:
        return None
    if not isinstance(details, dict):
        details = {"details": details}  # PagerDuty accepts a plain string too
    return fields.struct_from(details, "payload.custom_details", errors)


@dataclass
class _Payload:
    """A trigger's payload, validated: the Alert's scalar fields and the rest."""

    values: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    source: str = ""
    source_time: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    details: Any = None


def _payload(payload: dict[str, Any], errors: list[FieldError]) -> _Payload:
    summary = fields.string(
        payload, "summary", "payload.summary", errors, required=True, max_len=MAX_SUMMARY
    )
    source = fields.string(payload, "source", "payload.source", errors, required=True)
    severity = fields.string(payload, "severity", "payload.severity", errors, required=True)
    if severity and severity not in SEVERITIES:
        errors.append(FieldError("payload.severity", f"must be one of {', '.join(SEVERITIES)}"))
    result = _Payload(summary=summary, source=source)
    values = result.values
    if summary:
        values["summary"] = summary
    if source:
        values["source"] = source
    level = SEVERITIES.get(severity)
    if level is not None:
        values["severity"] = level
    for key in ("component", "group", "class"):
        value = fields.string(payload, key, f"payload.{key}", errors)
        if value:
            values[key] = value
            result.labels[key] = value
    result.source_time = fields.timestamp(payload, "timestamp", "payload.timestamp", errors)
    result.details = _custom_details(payload, errors)
    return result


def _links(body: dict[str, Any], errors: list[FieldError]) -> list[tuple[str, str]]:
    links = body.get("links")
    if links is None:
        return []
    if not isinstance(links, list):
        errors.append(FieldError("links", "must be a list"))
        return []
    if len(links) > MAX_LINKS:
        errors.append(FieldError("links", f"has {len(links)} entries; at most {MAX_LINKS}"))
        return []
    result = []
    for i, link in enumerate(links):
        if not isinstance(link, dict):
            errors.append(FieldError(f"links[{i}]", "must be an object"))
            continue
        href = fields.string(link, "href", f"links[{i}].href", errors, required=True)
        text = fields.string(link, "text", f"links[{i}].text", errors)
        result.append((href, text))
    return result


def _images(body: dict[str, Any], errors: list[FieldError]) -> list[tuple[str, str, str]]:
    images = body.get("images")
    if images is None:
        return []
    if not isinstance(images, list):
        errors.append(FieldError("images", "must be a list"))
        return []
    if len(images) > MAX_IMAGES:
        errors.append(FieldError("images", f"has {len(images)} entries; at most {MAX_IMAGES}"))
        return []
    result = []
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            errors.append(FieldError(f"images[{i}]", "must be an object"))
            continue
        src = fields.string(image, "src", f"images[{i}].src", errors, required=True)
        href = fields.string(image, "href", f"images[{i}].href", errors)
        alt = fields.string(image, "alt", f"images[{i}].alt", errors)
        result.append((src, href, alt))
    return result
