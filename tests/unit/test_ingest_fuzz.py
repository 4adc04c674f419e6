"""Property: whatever bytes or JSON arrive, a parser either normalizes them or raises
InvalidInput (field errors) — never anything else, so nothing can crash the service."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tocsin_common.config import parse_config
from tocsin_common.validation import InvalidInput
from tocsin_ingest import events_v2, fields, formats
from tocsin_ingest.raw_consumer import RecordRejected, decode_record

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = parse_config(
    """
version: 1
services:
  - id: s
    name: S
    escalation_policy: p
    integrations: [{key: fuzzkey000000000000000000000001}]
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: u}]}]}
users: [{id: u, name: U, email: u@example.com}]
""",
    "fuzz.yaml",
)

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


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(anything)
def test_any_json_is_normalized_or_refused_with_field_errors(body: Any) -> None:
    parse_all(body)


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_any_bytes_are_decoded_or_refused_with_field_errors(raw: bytes) -> None:
    try:
        body = fields.decode_json(raw)
    except InvalidInput as bad:
        assert bad.errors[0].field == "(body)"
        return
    parse_all(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
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
