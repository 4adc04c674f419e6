"""Property: whatever bytes or JSON arrive, a parser either normalizes them or raises
InvalidInput (field errors) — never anything else, so nothing can crash the service; and
whatever is accepted (Events v2, Alertmanager, Grafana, alerts.raw records, gRPC
requests) the correlation decoder can process: it parses as an Alert and inside the
IncidentEvent that carries it, under Kafka's 1 MB."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tocsin.v1 import alert_pb2, incident_pb2, ingest_service_pb2
from tocsin_common.config import parse_config
from tocsin_common.validation import InvalidInput
from tocsin_ingest import events_v2, fields, formats
from tocsin_ingest.grpc_api import IngestServicer
from tocsin_ingest.raw_consumer import RecordRejected, decode_record

# `make fuzz` multiplies every test's examples (a longer campaign than `make test`'s).
FUZZ_SCALE = int(os.environ.get("TOCSIN_FUZZ_SCALE", "1"))
NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "fuzzkey000000000000000000000001"
CONFIG_TEXT = """
version: 1
services:
  - id: s
    name: S
    escalation_policy: p
    integrations: [{key: fuzzkey000000000000000000000001}]
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: u}]}]}
users: [{id: u, name: U, email: u@example.com}]
"""
CONFIG = parse_config(CONFIG_TEXT, "fuzz.yaml")


class _Store:
    """The fuzz configuration, as a ConfigStore hands it out (no file)."""

    current = CONFIG


GRPC = IngestServicer(_Store(), publisher=None)  # type: ignore[arg-type]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
FIELD_NAMES = [
    "routing_key", "event_action", "dedup_key", "payload", "summary", "source", "severity",
    "timestamp", "custom_details", "links", "images", "href", "src", "alerts", "status",
    "labels", "annotations", "startsAt", "endsAt", "fingerprint", "generatorURL", "version",
    "values", "valueString", "dashboardURL", "orgId", "title", "commonAnnotations",
]  # fmt: skip
# JSON shaped like the formats: known keys, random values, nested the way they nest.
shaped = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=8)
    ),
    max_leaves=60,
)
alertish = st.fixed_dictionaries(
    {"version": st.sampled_from(["4", "1", 4]) | json_scalars},
    optional={
        "alerts": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "status": st.sampled_from(["firing", "resolved", "x"]) | json_scalars,
                    "labels": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                    "annotations": json_values,
                    "startsAt": st.sampled_from(
                        [
                            "2026-01-01T00:00:00Z",
                            "0001-01-01T00:00:00Z",
                            "9999-12-31T23:59:59-01:00",
                        ]
                    )
                    | st.text(max_size=30),
                    "fingerprint": json_values,
                    "values": json_values,
                    "dashboardURL": json_values,
                },
            ),
            max_size=4,
        )
        | json_values,
        "orgId": json_values,
        "title": json_values,
    },
)
v2ish = st.fixed_dictionaries(
    {"event_action": st.sampled_from(["trigger", "acknowledge", "resolve"]) | json_scalars},
    optional={
        "dedup_key": json_values,
        "payload": st.fixed_dictionaries(
            {},
            optional={
                "summary": json_values,
                "source": json_values,
                "severity": st.sampled_from(["critical", "info"]) | json_values,
                "timestamp": st.text(max_size=40) | json_values,
                "custom_details": json_values,
            },
        )
        | json_values,
        "links": json_values,
        "images": json_values,
    },
)
anything = json_values | shaped | alertish | v2ish


def parse_all(body: Any) -> None:
    for fmt in formats.NORMALIZERS:
        try:
            alerts = formats.normalize(fmt, body, "s", "k", NOW)
        except InvalidInput as bad:
            assert bad.errors and all(e.field and e.problem for e in bad.errors)
        else:
            assert alerts and all(a.SerializeToString() for a in alerts)
    if isinstance(body, dict):
        try:
            events_v2.normalize_change(body, "s", NOW)
        except InvalidInput as bad:
            assert bad.errors


@settings(max_examples=300 * FUZZ_SCALE, suppress_health_check=[HealthCheck.too_slow])
@given(anything)
def test_any_json_is_normalized_or_refused_with_field_errors(body: Any) -> None:
    parse_all(body)


@settings(max_examples=200 * FUZZ_SCALE)
@given(st.binary(max_size=2000))
def test_any_bytes_are_decoded_or_refused_with_field_errors(raw: bytes) -> None:
    try:
        body = fields.decode_json(raw)
    except InvalidInput as bad:
        assert bad.errors[0].field == "(body)"
        return
    parse_all(body)


@settings(max_examples=300 * FUZZ_SCALE, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from([b"events_v2", b"alertmanager", b"grafana", b"", b"\xff", b"xml"]),
    key=st.sampled_from([None, b"fuzzkey000000000000000000000001", b"nope"]),
    value=st.none() | st.binary(max_size=300) | anything.map(lambda v: json.dumps(v).encode()),
)
def test_any_alerts_raw_record_is_normalized_or_rejected_with_a_reason(
    fmt: bytes, key: bytes | None, value: bytes | None
) -> None:
    headers = [("tocsin-format", fmt)] + ([("tocsin-routing-key", key)] if key else [])
    try:
        decode_record(headers, value, CONFIG, NOW)
    except RecordRejected as rejected:
        assert rejected.errors and str(rejected).split(":")[0] in {
            "unknown format",
            "undecodable",
            "unknown key",
            "invalid event",
        }


# --- the edge rule: whatever is accepted, the correlation decoder can process ----------------

hostile_scalars = (
    json_scalars
    | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "é" * 3])
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, 10**4000])
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
)
hostile = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES) | st.text(max_size=6) | st.just("\ud800"),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)
deep = st.integers(min_value=25, max_value=45).map(
    lambda n: {"routing_key": "k", "event_action": "trigger",
               "payload": {"summary": "s", "source": "x", "severity": "info",
                           "custom_details": _nested(n)}}
)  # fmt: skip


def _nested(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 3 == 1 else {"k": value}
    return value


def processable(alert: alert_pb2.Alert) -> None:
    """As correlation decodes it, and as its incident record carries it."""
    assert alert_pb2.Alert.FromString(alert.SerializeToString()) == alert
    event = incident_pb2.IncidentEvent(alert=alert)
    event.incident.labels.update(alert.labels)
    incident_pb2.IncidentEvent.FromString(event.SerializeToString())
    assert len(event.SerializeToString()) < 1_000_000


def processable_change(change: alert_pb2.ChangeEvent) -> None:
    event = incident_pb2.IncidentEvent()
    event.incident.probable_causes.add(change=change)
    incident_pb2.IncidentEvent.FromString(event.SerializeToString())


def encoded(body: Any) -> bytes:
    """``body`` as a sender would write it (NaN and lone surrogates as escapes)."""
    return json.dumps(body, allow_nan=True).encode()


def accepted_or_refused(raw: bytes) -> None:
    """Decoded and normalized as HTTP and alerts.raw do: refused with field errors, or
    every accepted alert and change processable downstream."""
    try:
        body = fields.decode_json(raw)
    except InvalidInput as bad:
        assert bad.errors and all(e.field and e.problem for e in bad.errors)
        return
    for fmt in formats.NORMALIZERS:
        try:
            alerts = formats.normalize(fmt, body, "s", "k", NOW)
        except InvalidInput as bad:
            assert bad.errors and all(e.field and e.problem for e in bad.errors)
        else:
            for alert in alerts:
                processable(alert)
    if isinstance(body, dict):
        try:
            change = events_v2.normalize_change(body, "s", NOW)
        except InvalidInput as bad:
            assert bad.errors
        else:
            processable_change(change)


@settings(
    max_examples=250 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(hostile | v2ish | alertish | deep)
def test_every_accepted_event_is_processable_by_correlation(body: Any) -> None:
    accepted_or_refused(encoded(body))


@settings(
    max_examples=150 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    fmt=st.sampled_from(["events_v2", "alertmanager", "grafana"]),
    value=(hostile | v2ish | alertish | deep).map(encoded),
)
def test_every_accepted_alerts_raw_record_is_processable(fmt: str, value: bytes) -> None:
    headers = [("tocsin-format", fmt.encode()), ("tocsin-routing-key", KEY.encode())]
    try:
        alerts = decode_record(headers, value, CONFIG, NOW)
    except RecordRejected as rejected:
        assert rejected.errors
        str(rejected).encode("utf-8", "backslashreplace")
        return
    for alert in alerts:
        processable(alert)


grpc_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
struct_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | grpc_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(grpc_text, children, max_size=3)
    ),
    max_leaves=20,
)


def _struct(value: Any) -> Struct | None:
    if not isinstance(value, dict):
        return None
    struct = Struct()
    struct.update(value)
    return struct


@st.composite
def send_event_requests(draw: st.DrawFn) -> ingest_service_pb2.SendEventRequest:
    request = ingest_service_pb2.SendEventRequest(
        routing_key=draw(st.sampled_from([KEY, "", "nope"])),
        action=draw(st.integers(min_value=0, max_value=4)),
        severity=draw(st.integers(min_value=0, max_value=5)),
        dedup_key=draw(grpc_text | st.just("k" * 300)),
        summary=draw(grpc_text | st.just("s" * 1100)),
        source=draw(grpc_text),
        client=draw(grpc_text | st.just("c" * 9000)),
        labels=draw(st.dictionaries(grpc_text, grpc_text, max_size=4)),
    )
    details = draw(
        st.none()
        | struct_values.map(_struct)
        | st.integers(min_value=28, max_value=40).map(lambda n: _struct({"d": _nested(n)}))
    )
    if details is not None:
        request.custom_details.CopyFrom(details)
    if draw(st.booleans()):
        request.timestamp.seconds = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
        request.timestamp.nanos = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    return request


@settings(
    max_examples=200 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(send_event_requests())
def test_every_grpc_request_is_accepted_processable_or_invalid_argument(
    request: ingest_service_pb2.SendEventRequest,
) -> None:
    """What SendEvent does before publishing: never an exception but InvalidInput (the
    INVALID_ARGUMENT answer), never an accepted alert the pipeline cannot process."""
    try:
        alert, _ = GRPC.normalize(request)
    except InvalidInput as bad:
        assert bad.errors and all(e.field and e.problem for e in bad.errors)
        return
    processable(alert)
