"""Grafana unified-alerting webhook (pure, no I/O).

Grafana's payload is Alertmanager's plus: orgId, title, state, message at the top, and per
alert values, valueString, dashboardURL, panelURL, silenceURL and imageURL. Identity (dedup
key) is each alert's fingerprint; status "resolved" resolves it. Legacy (pre-8) Grafana
alerting payloads, without ``alerts``, are refused with that said.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tocsin.v1 import alert_pb2
from tocsin_common.validation import FieldError

from tocsin_ingest import fields
from tocsin_ingest.alertmanager import normalize_group

FORMAT = "grafana"

_URLS = (("dashboardURL", "Dashboard"), ("panelURL", "Panel"), ("silenceURL", "Silence"))


def normalize(
    body: Any, service_id: str, integration_key: str, received_at: datetime
) -> list[alert_pb2.Alert]:
    """Every alert of a Grafana notification; raises InvalidInput listing every problem."""
    errors: list[FieldError] = []
    title = ""
    if isinstance(body, dict):
        title = fields.string(body, "title", "title", errors, max_len=None)
        fields.string(body, "state", "state", errors, max_len=None)  # not stored
        fields.string(body, "message", "message", errors, max_len=None)  # not stored
        org = body.get("orgId")
        if org is not None and (isinstance(org, bool) or not isinstance(org, int)):
            errors.append(FieldError("orgId", f"must be a number, not {fields.type_name(org)}"))
        if "alerts" not in body and ("ruleName" in body or "evalMatches" in body):
            errors.append(
                FieldError(
                    "(body)",
                    "looks like a legacy Grafana alerting payload; "
                    "use Grafana's unified alerting webhook contact point",
                )
            )
    return normalize_group(
        body,
        service_id,
        integration_key,
        received_at,
        source_format=alert_pb2.SOURCE_FORMAT_GRAFANA,
        client="Grafana",
        errors=errors,
        extras=_extras,
        fallback_summary=title,
    )


def _extras(
    entry: dict[str, Any],
    path: str,
    alert: alert_pb2.Alert,
    body: dict[str, Any],
    errors: list[FieldError],
) -> None:
    for key, text in _URLS:
        url = fields.string(entry, key, f"{path}.{key}", errors, max_len=None)
        if url:
            alert.links.add(href=url, text=text)
    image = fields.string(entry, "imageURL", f"{path}.imageURL", errors, max_len=None)
    if image:
        alert.images.add(src=image, alt=alert.summary[:200])
    value_string = fields.string(entry, "valueString", f"{path}.valueString", errors, max_len=None)
    if value_string:
        alert.details["valueString"] = fields.truncate(value_string, fields.MAX_TEXT)
    values = entry.get("values")
    if values is not None:
        if not isinstance(values, dict):
            errors.append(
                FieldError(f"{path}.values", f"must be an object, not {fields.type_name(values)}")
            )
        else:
            numbers: dict[str, float | None] = {}
            for name, value in values.items():
                if value is None:
                    numbers[name] = None
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    try:
                        numbers[name] = float(value)
                    except OverflowError:
                        errors.append(
                            FieldError(f"{path}.values.{name}", "is a number too large to hold")
                        )
                else:
                    errors.append(
                        FieldError(
                            f"{path}.values.{name}",
                            f"must be a number, not {fields.type_name(value)}",
                        )
                    )
            struct = fields.struct_from({"values": numbers}, f"{path}.values", errors)
            if struct is not None:
                alert.details.MergeFrom(struct)
    org = body.get("orgId")
    if isinstance(org, int) and not isinstance(org, bool) and abs(org) < 2**53:
        alert.details["orgId"] = org
