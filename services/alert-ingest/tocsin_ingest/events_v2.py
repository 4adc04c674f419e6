"""PagerDuty Events API v2: validation and normalization of one event (pure, no I/O).

Reference: PagerDuty's "Send an Alert Event" (POST /v2/enqueue). Limits as PagerDuty's:
dedup_key at most 255 characters, payload.summary at most 1024.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from tocsin.v1 import alert_pb2
from tocsin_common.timeutil import set_timestamp
from tocsin_common.validation import FieldError, InvalidInput

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024

ACTIONS = {
    "trigger": alert_pb2.ALERT_ACTION_TRIGGER,
    "acknowledge": alert_pb2.ALERT_ACTION_ACKNOWLEDGE,
    "resolve": alert_pb2.ALERT_ACTION_RESOLVE,
}
SEVERITIES = {
    "critical": alert_pb2.SEVERITY_CRITICAL,
    "error": alert_pb2.SEVERITY_ERROR,
    "warning": alert_pb2.SEVERITY_WARNING,
    "info": alert_pb2.SEVERITY_INFO,
}


@dataclass(frozen=True)
class Accepted:
    routing_key: str
    alert: alert_pb2.Alert


def default_dedup_key(service_id: str, summary: str, source: str) -> str:
    """Identical alerts dedup by default: a hash of service, summary and source."""
    digest = hashlib.sha256(f"{service_id}\x1f{summary}\x1f{source}".encode()).hexdigest()
    return digest[:32]


def _string(
    body: dict[str, Any],
    key: str,
    path: str,
    errors: list[FieldError],
    *,
    required: bool = False,
    max_len: int | None = None,
) -> str:
    value = body.get(key)
    if value is None:
        if required:
            errors.append(FieldError(path, "is required"))
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, not {type(value).__name__}"))
        return ""
    if required and not value.strip():
        errors.append(FieldError(path, "must not be empty"))
    if max_len is not None and len(value) > max_len:
        errors.append(FieldError(path, f"is {len(value)} characters; at most {max_len} allowed"))
    return value


def parse_event(body: Any) -> tuple[str, dict[str, Any], list[FieldError]]:
    """First pass: the routing key and the body as a mapping (for authentication)."""
    if not isinstance(body, dict):
        return "", {}, [FieldError("(body)", "must be a JSON object")]
    errors: list[FieldError] = []
    routing_key = _string(body, "routing_key", "routing_key", errors, required=True)
    return routing_key, body, errors


def normalize(body: dict[str, Any], service_id: str, received_at: datetime) -> alert_pb2.Alert:
    """Validate a v2 event whose routing key was already resolved to `service_id`.

    Raises InvalidInput listing every problem found.
    """
    errors: list[FieldError] = []
    action_name = _string(body, "event_action", "event_action", errors, required=True)
    action = ACTIONS.get(action_name)
    if action_name and action is None:
        errors.append(FieldError("event_action", f"must be one of {', '.join(ACTIONS)}"))
    dedup_key = _string(body, "dedup_key", "dedup_key", errors, max_len=MAX_DEDUP_KEY)
    if (
        action in (alert_pb2.ALERT_ACTION_ACKNOWLEDGE, alert_pb2.ALERT_ACTION_RESOLVE)
        and not dedup_key
    ):
        errors.append(FieldError("dedup_key", f"is required for {action_name}"))

    alert = alert_pb2.Alert(
        event_id=str(uuid.uuid4()),
        service_id=service_id,
        action=action or alert_pb2.ALERT_ACTION_UNSPECIFIED,
        source_format=alert_pb2.SOURCE_FORMAT_EVENTS_V2,
    )
    set_timestamp(alert.received_time, received_at)
    alert.client = _string(body, "client", "client", errors)
    alert.client_url = _string(body, "client_url", "client_url", errors)
    _links(body, alert, errors)
    _images(body, alert, errors)

    payload = body.get("payload")
    if action == alert_pb2.ALERT_ACTION_TRIGGER:
        if not isinstance(payload, dict):
            errors.append(FieldError("payload", "is required for trigger and must be an object"))
        else:
            _payload(payload, alert, errors)
    elif payload is not None and not isinstance(payload, dict):
        errors.append(FieldError("payload", "must be an object"))
    if errors:
        raise InvalidInput(errors)
    alert.dedup_key = dedup_key or default_dedup_key(service_id, alert.summary, alert.source)
    if not alert.HasField("source_time"):
        alert.source_time.CopyFrom(alert.received_time)
    return alert


def _payload(payload: dict[str, Any], alert: alert_pb2.Alert, errors: list[FieldError]) -> None:
    alert.summary = _string(
        payload, "summary", "payload.summary", errors, required=True, max_len=MAX_SUMMARY
    )
    alert.source = _string(payload, "source", "payload.source", errors, required=True)
    severity = _string(payload, "severity", "payload.severity", errors, required=True)
    if severity and severity not in SEVERITIES:
        errors.append(FieldError("payload.severity", f"must be one of {', '.join(SEVERITIES)}"))
    alert.severity = SEVERITIES.get(severity, alert_pb2.SEVERITY_UNSPECIFIED)
    alert.component = _string(payload, "component", "payload.component", errors)
    alert.group = _string(payload, "group", "payload.group", errors)
    setattr(alert, "class", _string(payload, "class", "payload.class", errors))
    timestamp = _string(payload, "timestamp", "payload.timestamp", errors)
    if timestamp:
        try:
            parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise ValueError
            set_timestamp(alert.source_time, parsed)
        except ValueError:
            errors.append(
                FieldError("payload.timestamp", "must be an ISO 8601 date-time with an offset")
            )
    details = payload.get("custom_details")
    if details is not None:
        struct = Struct()
        if isinstance(details, dict):
            try:
                struct.update(details)
            except (ValueError, TypeError) as e:
                errors.append(FieldError("payload.custom_details", f"cannot be stored: {e}"))
        else:
            struct.update({"details": details})  # PagerDuty accepts a plain string too
        alert.details.CopyFrom(struct)
    for key in ("component", "group", "class"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            alert.labels[key] = value


def _links(body: dict[str, Any], alert: alert_pb2.Alert, errors: list[FieldError]) -> None:
    links = body.get("links")
    if links is None:
        return
    if not isinstance(links, list):
        errors.append(FieldError("links", "must be a list"))
        return
    for i, link in enumerate(links):
        if not isinstance(link, dict):
            errors.append(FieldError(f"links[{i}]", "must be an object"))
            continue
        href = _string(link, "href", f"links[{i}].href", errors, required=True)
        text = _string(link, "text", f"links[{i}].text", errors)
        alert.links.add(href=href, text=text)


def _images(body: dict[str, Any], alert: alert_pb2.Alert, errors: list[FieldError]) -> None:
    images = body.get("images")
    if images is None:
        return
    if not isinstance(images, list):
        errors.append(FieldError("images", "must be a list"))
        return
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            errors.append(FieldError(f"images[{i}]", "must be an object"))
            continue
        src = _string(image, "src", f"images[{i}].src", errors, required=True)
        href = _string(image, "href", f"images[{i}].href", errors)
        alt = _string(image, "alt", f"images[{i}].alt", errors)
        alert.images.add(src=src, href=href, alt=alt)
