"""Which incident an alert joins (pure).

Modes, as PagerDuty offers them: `none` (one incident per alert), `content` (alerts whose
configured fields are equal share an open incident created within the window) and `time`
(every alert of the service within the window shares one incident).
"""

from __future__ import annotations

import hashlib
from typing import Any

from tocsin.v1 import alert_pb2


def field_value(alert: alert_pb2.Alert, field: str) -> str:
    """A grouping field: `labels.<name>`, or an alert attribute (summary, source, ...)."""
    if field.startswith("labels."):
        return alert.labels.get(field.removeprefix("labels."), "")
    if field.startswith("details."):
        value: Any = dict(alert.details).get(field.removeprefix("details."), "")
        return str(value)
    value = getattr(alert, field, "")
    return str(value)


def group_key(alert: alert_pb2.Alert, mode: str, fields: tuple[str, ...] | list[str]) -> str:
    if mode == "time":
        return "time"
    if mode == "content":
        joined = "\x1f".join(f"{f}={field_value(alert, f)}" for f in fields)
        return "content:" + hashlib.sha256(joined.encode()).hexdigest()[:24]
    return "alert:" + alert.dedup_key  # mode none: the alert is its own group


def joins_open_incident(created_at: float, now: float, window_seconds: float | None) -> bool:
    """An open incident takes new alerts of its group while it is younger than the window."""
    return window_seconds is None or now - created_at <= window_seconds
