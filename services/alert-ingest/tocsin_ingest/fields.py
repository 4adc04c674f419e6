"""Field readers shared by the parsers (pure, no I/O).

Each reader appends a FieldError naming the field path instead of raising, so a sender sees
every problem of a bad request at once; the parser raises InvalidInput at the end.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2
from tocsin_common import validation
from tocsin_common.validation import FieldError

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
MAX_LABELS = validation.MAX_LABELS
MAX_LABEL_NAME = validation.MAX_LABEL_NAME
MAX_LABEL_VALUE = validation.MAX_LABEL_VALUE
MAX_ALERTS_PER_PAYLOAD = 1000
# Any other text field of an Events v2 or gRPC event (source, component, group, class,
# client, client_url, links and images): the same cap as a label value. Webhook fields
# that tools fill in themselves (Alertmanager's generatorURL holds a whole PromQL query,
# groupKey every grouping label) are not refused for length: they are bounded by the body
# limit and the normalized alert's size (validation.MAX_ALERT_BYTES).
MAX_TEXT = MAX_LABEL_VALUE

SEVERITIES = {
    "critical": alert_pb2.SEVERITY_CRITICAL,
    "error": alert_pb2.SEVERITY_ERROR,
    "warning": alert_pb2.SEVERITY_WARNING,
    "info": alert_pb2.SEVERITY_INFO,
}

# Severity label values seen in the wild (Prometheus rules, Grafana, Opsgenie/PagerDuty
# priorities), mapped onto Tocsin's four. Anything else gets the webhook default.
SEVERITY_ALIASES = {
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "emergency": "critical",
    "emerg": "critical",
    "alert": "critical",
    "page": "critical",
    "high": "critical",
    "p1": "critical",
    "sev1": "critical",
    "error": "error",
    "err": "error",
    "major": "error",
    "p2": "error",
    "sev2": "error",
    "warning": "warning",
    "warn": "warning",
    "minor": "warning",
    "medium": "warning",
    "average": "warning",
    "p3": "warning",
    "sev3": "warning",
    "info": "info",
    "informational": "info",
    "information": "info",
    "notice": "info",
    "low": "info",
    "none": "info",
    "debug": "info",
    "ok": "info",
    "p4": "info",
    "p5": "info",
    "sev4": "info",
    "sev5": "info",
}
DEFAULT_WEBHOOK_SEVERITY = "error"

# Go's zero time, which Alertmanager sends as endsAt of a firing alert.
_GO_ZERO_YEAR = 1


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_time(field: Timestamp, value: datetime) -> None:
    """Set a protobuf Timestamp from an aware datetime, exactly (to the microsecond); the
    same as tocsin_common.timeutil.set_timestamp, without its copies (hot path)."""
    delta = value - _EPOCH
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1000


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, variant RFC 4122


def event_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) writes it: unique, not
    secret. From ``random`` rather than the OS (a system call per event); ``random`` is
    seeded from the OS at start and again in a forked child."""
    h = "%032x" % (random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def decode_json(raw: bytes) -> Any:
    """The JSON document in ``raw``; InvalidInput naming the body when it is not one, or
    each field no later stage could carry (tocsin_common.validation.decode_json)."""
    return validation.decode_json(raw)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def string(
    body: Mapping[str, Any],
    key: str,
    path: str,
    errors: list[FieldError],
    *,
    required: bool = False,
    max_len: int | None = MAX_TEXT,
) -> str:
    """A string field; "" when absent (an error when required); at most ``max_len``
    characters (MAX_TEXT unless said; None: any length, for what is not stored)."""
    value = body.get(key)
    if value is None:
        if required:
            errors.append(FieldError(path, "is required"))
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(path, f"must be a string, not {type_name(value)}"))
        return ""
    if required and not value.strip():
        errors.append(FieldError(path, "must not be empty"))
    if max_len is not None and len(value) > max_len:
        errors.append(FieldError(path, f"is {len(value)} characters; at most {max_len} allowed"))
    return value


def string_map(
    body: Mapping[str, Any],
    key: str,
    path: str,
    errors: list[FieldError],
    *,
    required: bool = False,
) -> dict[str, str]:
    """An object of string values (labels, annotations)."""
    value = body.get(key)
    if value is None:
        if required:
            errors.append(FieldError(path, "is required"))
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(path, f"must be an object, not {type_name(value)}"))
        return {}
    if len(value) > MAX_LABELS:
        errors.append(FieldError(path, f"has {len(value)} entries; at most {MAX_LABELS} allowed"))
        return {}
    result: dict[str, str] = {}
    for name, item in value.items():
        if len(name) > MAX_LABEL_NAME:
            errors.append(
                FieldError(f"{path}.{name[:40]}…", f"name is longer than {MAX_LABEL_NAME}")
            )
        elif not isinstance(item, str):
            errors.append(FieldError(f"{path}.{name}", f"must be a string, not {type_name(item)}"))
        elif len(item) > MAX_LABEL_VALUE:
            errors.append(
                FieldError(
                    f"{path}.{name}",
                    f"is {len(item)} characters; at most {MAX_LABEL_VALUE} allowed",
                )
            )
        else:
            result[name] = item
    return result


def timestamp(
    body: Mapping[str, Any], key: str, path: str, errors: list[FieldError]
) -> datetime | None:
    """An RFC 3339 / ISO 8601 date-time with an offset; None when absent or Go's zero time."""
    raw = string(body, key, path, errors)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("no offset")
        if parsed.year == _GO_ZERO_YEAR:
            return None
        # Timestamp cannot hold dates before 1 AD or after 9999 AD; astimezone may overflow.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        errors.append(FieldError(path, "must be an RFC 3339 date-time with an offset"))
        return None


def struct_from(value: Mapping[str, Any], path: str, errors: list[FieldError]) -> Struct | None:
    """``value`` as a protobuf Struct, when it is nested no deeper than every later stage
    can parse (validation.MAX_STRUCT_DEPTH)."""
    too_deep = validation.struct_depth_problem(value, path)
    if too_deep is not None:
        errors.append(too_deep)
        return None
    struct = Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError, RecursionError, OverflowError) as e:
        errors.append(FieldError(path, f"cannot be stored: {e}"))
        return None
    return struct


def alert_size_problem(alert: alert_pb2.Alert, path: str = "(event)") -> FieldError | None:
    """An alert whose incident record could not fit a Kafka record, or None: the alert is
    counted with the labels the incident copies from it (validation.MAX_ALERT_BYTES)."""
    size = alert.ByteSize() + sum(len(k) + len(v) + 8 for k, v in alert.labels.items())
    if size <= validation.MAX_ALERT_BYTES:
        return None
    return FieldError(
        path,
        f"is {size:,} bytes once normalized (with its labels counted twice, as its incident "
        f"carries them); at most {validation.MAX_ALERT_BYTES:,} allowed",
    )


def webhook_severity(labels: Mapping[str, str]) -> alert_pb2.Severity.ValueType:
    """labels.severity (or priority) mapped onto critical/error/warning/info."""
    raw = labels.get("severity") or labels.get("priority") or ""
    name = SEVERITY_ALIASES.get(raw.strip().lower(), DEFAULT_WEBHOOK_SEVERITY)
    return SEVERITIES[name]


def truncate(text: str, limit: int = MAX_SUMMARY) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable identity for an alert that came without a fingerprint: its label set."""
    canonical = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
