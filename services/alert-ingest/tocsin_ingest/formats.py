"""The wire formats alert-ingest accepts, by name (pure, no I/O).

The names are those of the ``tocsin-format`` header on alerts.raw and of
``Integration.type``: events_v2, alertmanager, grafana.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tocsin.v1 import alert_pb2
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import alertmanager, events_v2, grafana

EVENTS_V2 = "events_v2"
ALERTMANAGER = alertmanager.FORMAT
GRAFANA = grafana.FORMAT

Normalizer = Callable[[Any, str, str, datetime], list[alert_pb2.Alert]]


def _events_v2(
    body: Any, service_id: str, integration_key: str, received_at: datetime
) -> list[alert_pb2.Alert]:
    if not isinstance(body, dict):
        raise InvalidInput([FieldError("(body)", "must be a JSON object")])
    return [events_v2.normalize(body, service_id, received_at, integration_key)]


NORMALIZERS: dict[str, Normalizer] = {
    EVENTS_V2: _events_v2,
    ALERTMANAGER: alertmanager.normalize,
    GRAFANA: grafana.normalize,
}


def normalize(
    fmt: str, body: Any, service_id: str, integration_key: str, received_at: datetime
) -> list[alert_pb2.Alert]:
    """The normalized alerts of ``body`` in format ``fmt``; raises InvalidInput."""
    try:
        normalizer = NORMALIZERS[fmt]
    except KeyError:
        raise InvalidInput(
            [FieldError("format", f"{fmt!r} is not one of {', '.join(NORMALIZERS)}")]
        ) from None
    return normalizer(body, service_id, integration_key, received_at)


def body_routing_key(body: Any) -> str:
    """The routing key a body carries itself (Events v2 always; others optionally), or ""."""
    if isinstance(body, dict):
        key = body.get("routing_key")
        if isinstance(key, str):
            return key
    return ""
