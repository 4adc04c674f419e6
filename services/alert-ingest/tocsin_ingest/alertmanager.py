"""Prometheus Alertmanager webhook, payload version 4 (pure, no I/O).

One notification carries a group of alerts; each entry of ``alerts`` becomes one normalized
Alert whose identity (dedup key) is the entry's fingerprint. An entry with status
"resolved" resolves that alert; "firing" (re-)triggers it.

Mapping: labels -> Alert.labels; annotations -> details; summary from annotations.summary,
else labels.alertname; severity from labels.severity (see fields.SEVERITY_ALIASES, default
error); generatorURL -> first link; startsAt -> source_time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tocsin.v1 import alert_pb2
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import fields

FORMAT = "alertmanager"
PAYLOAD_VERSION = "4"

STATUSES = {
    "firing": alert_pb2.ALERT_ACTION_TRIGGER,
    "resolved": alert_pb2.ALERT_ACTION_RESOLVE,
}

# Reads the format-specific extras of one entry into the alert (Grafana's values, URLs...).
EntryExtras = Callable[
    [dict[str, Any], str, alert_pb2.Alert, dict[str, Any], list[FieldError]], None
]


def normalize(
    body: Any, service_id: str, integration_key: str, received_at: datetime
) -> list[alert_pb2.Alert]:
    """Every alert of an Alertmanager notification; raises InvalidInput listing every problem."""
    errors: list[FieldError] = []
    if isinstance(body, dict) and "version" in body and body["version"] != PAYLOAD_VERSION:
        errors.append(
            FieldError("version", f"must be {PAYLOAD_VERSION!r} (Alertmanager webhook version 4)")
        )
    return normalize_group(
        body,
        service_id,
        integration_key,
        received_at,
        source_format=alert_pb2.SOURCE_FORMAT_ALERTMANAGER,
        client="Alertmanager",
        errors=errors,
    )


def normalize_group(
    body: Any,
    service_id: str,
    integration_key: str,
    received_at: datetime,
    *,
    source_format: alert_pb2.SourceFormat.ValueType,
    client: str,
    errors: list[FieldError] | None = None,
    extras: EntryExtras | None = None,
    fallback_summary: str = "",
) -> list[alert_pb2.Alert]:
    """The shared Alertmanager-shaped group parser (Grafana's payload is a superset)."""
    errors = [] if errors is None else errors
    if not isinstance(body, dict):
        raise InvalidInput([FieldError("(body)", "must be a JSON object")])
    external_url = fields.string(body, "externalURL", "externalURL", errors, max_len=None)
    receiver = fields.string(body, "receiver", "receiver", errors, max_len=None)
    group_key = fields.string(body, "groupKey", "groupKey", errors, max_len=None)
    common_annotations = fields.string_map(body, "commonAnnotations", "commonAnnotations", errors)
    entries = body.get("alerts")
    alerts: list[alert_pb2.Alert] = []
    if entries is None:
        errors.append(FieldError("alerts", "is required"))
    elif not isinstance(entries, list):
        errors.append(FieldError("alerts", f"must be a list, not {fields.type_name(entries)}"))
    elif not entries:
        errors.append(FieldError("alerts", "must contain at least one alert"))
    elif len(entries) > fields.MAX_ALERTS_PER_PAYLOAD:
        errors.append(
            FieldError(
                "alerts",
                f"has {len(entries)} alerts; at most {fields.MAX_ALERTS_PER_PAYLOAD} per request",
            )
        )
    else:
        for i, entry in enumerate(entries):
            path = f"alerts[{i}]"
            if not isinstance(entry, dict):
                errors.append(FieldError(path, f"must be an object, not {fields.type_name(entry)}"))
                continue
            alert = _entry(entry, path, service_id, received_at, errors)
            if alert is None:
                continue
            alert.source_format = source_format
            alert.integration_key = integration_key
            alert.client = client
            alert.client_url = external_url
            if not alert.summary:
                alert.summary = fields.truncate(
                    common_annotations.get("summary") or fallback_summary or "(no summary)"
                )
            if extras is not None:
                extras(entry, path, alert, body, errors)
            if receiver or group_key:
                extra = {"receiver": receiver, "groupKey": group_key}
                alert.details.update({k: v for k, v in extra.items() if v})
            too_big = fields.alert_size_problem(alert, path)
            if too_big is not None:
                errors.append(too_big)
            alerts.append(alert)
    if errors:
        raise InvalidInput(errors)
    return alerts


def _entry(
    entry: dict[str, Any],
    path: str,
    service_id: str,
    received_at: datetime,
    errors: list[FieldError],
) -> alert_pb2.Alert | None:
    before = len(errors)
    status = fields.string(entry, "status", f"{path}.status", errors, required=True)
    action = STATUSES.get(status)
    if status and action is None:
        errors.append(FieldError(f"{path}.status", f"must be one of {', '.join(STATUSES)}"))
    labels = fields.string_map(entry, "labels", f"{path}.labels", errors, required=True)
    annotations = fields.string_map(entry, "annotations", f"{path}.annotations", errors)
    fingerprint = fields.string(
        entry, "fingerprint", f"{path}.fingerprint", errors, max_len=fields.MAX_DEDUP_KEY
    )
    starts_at = fields.timestamp(entry, "startsAt", f"{path}.startsAt", errors)
    ends_at = fields.timestamp(entry, "endsAt", f"{path}.endsAt", errors)
    generator_url = fields.string(
        entry, "generatorURL", f"{path}.generatorURL", errors, max_len=None
    )
    if len(errors) > before:
        return None

    alert = alert_pb2.Alert(
        event_id=fields.event_id(),
        service_id=service_id,
        dedup_key=fingerprint or fields.label_fingerprint(labels),
        action=action or alert_pb2.ALERT_ACTION_UNSPECIFIED,
        severity=fields.webhook_severity(labels),
        summary=fields.truncate(annotations.get("summary") or labels.get("alertname", "")),
        source=labels.get("instance") or labels.get("job") or "",
    )
    setattr(alert, "class", labels.get("alertname", ""))
    alert.labels.update(labels)
    details: dict[str, Any] = dict(annotations)
    if ends_at is not None:
        details["endsAt"] = ends_at.isoformat()
    alert.details.update(details)
    if generator_url:
        alert.links.add(href=generator_url, text="Source")
    runbook = annotations.get("runbook_url")
    if runbook:
        alert.links.add(href=runbook, text="Runbook")
    fields.set_time(alert.received_time, received_at)
    fields.set_time(alert.source_time, starts_at or received_at)
    return alert
