"""Authentication by integration key, alerts.raw record decoding, change events and the
gRPC field names (pure parts of alert-ingest)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tocsin.v1 import alert_pb2, ingest_service_pb2
from tocsin_common.config import parse_config
from tocsin_common.validation import FieldError, InvalidInput
from tocsin_ingest import auth, events_v2
from tocsin_ingest.grpc_api import grpc_field, request_to_event
from tocsin_ingest.raw_consumer import RecordRejected, decode_record

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ANY_KEY = "anykey0000000000000000000000001"
AM_KEY = "amkey00000000000000000000000001"
CONFIG = parse_config(
    f"""
version: 1
services:
  - id: checkout
    name: Checkout
    escalation_policy: p
    integrations:
      - {{key: {ANY_KEY}}}
      - {{key: {AM_KEY}, type: alertmanager}}
escalation_policies:
  - {{id: p, name: P, levels: [{{delay: 5m, targets: [{{type: user, id: u}}]}}]}}
users: [{{id: u, name: U, email: u@example.com}}]
""",
    "t.yaml",
)
AM_BODY = {
    "version": "4",
    "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": "fp1"}],
}
V2_BODY = {
    "routing_key": ANY_KEY,
    "event_action": "trigger",
    "payload": {"summary": "s", "source": "x", "severity": "info"},
}


def test_a_key_of_a_typed_integration_accepts_only_its_format() -> None:
    service, integration = auth.authenticate(CONFIG, "alertmanager", AM_KEY, "path.key")
    assert (service.id, integration.type) == ("checkout", "alertmanager")
    with pytest.raises(InvalidInput) as caught:
        auth.authenticate(CONFIG, "grafana", AM_KEY, "path.key")
    assert caught.value.errors == [
        FieldError(
            "path.key",
            "belongs to an integration of type alertmanager, which does not accept grafana events",
        )
    ]
    with pytest.raises(InvalidInput) as caught:
        auth.authenticate(CONFIG, "grafana", "nope", "Authorization")
    assert caught.value.errors == [FieldError("Authorization", "is not a known integration key")]


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("", None)],
)
def test_bearer_tokens(header: str, token: str | None) -> None:
    assert auth.bearer_token({"Authorization": header}) == token


def test_a_raw_record_takes_its_key_from_the_header_before_the_body() -> None:
    headers = [("tocsin-format", b"alertmanager"), ("tocsin-routing-key", AM_KEY.encode())]
    (alert,) = decode_record(headers, json.dumps(AM_BODY).encode(), CONFIG, NOW)
    assert (alert.service_id, alert.dedup_key, alert.integration_key) == ("checkout", "fp1", AM_KEY)
    (alert,) = decode_record(
        [("tocsin-format", b"events_v2")], json.dumps(V2_BODY).encode(), CONFIG, NOW
    )
    assert alert.source_format == alert_pb2.SOURCE_FORMAT_EVENTS_V2
    assert alert.integration_key == ANY_KEY


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([], b"{}", "unknown format: tocsin-format: header is required"),
        ([("tocsin-format", b"xml")], b"{}", "unknown format: tocsin-format: 'xml' is not one"),
        ([("tocsin-format", b"grafana")], b"\xff{", "undecodable: (body): is not UTF-8"),
        ([("tocsin-format", b"grafana")], b"{", "undecodable: (body): is not valid JSON"),
        ([("tocsin-format", b"grafana")], None, "undecodable: (body): is empty"),
        ([("tocsin-format", b"grafana")], b"{}", "unknown key: routing_key: is required"),
        (
            [("tocsin-format", b"grafana"), ("tocsin-routing-key", b"nope")],
            b"{}",
            "unknown key: tocsin-routing-key: is not a known integration key",
        ),
        (
            [("tocsin-format", b"grafana"), ("tocsin-routing-key", AM_KEY.encode())],
            b"{}",
            "unknown key: tocsin-routing-key: belongs to an integration of type alertmanager",
        ),
        (
            [("tocsin-format", b"alertmanager")],
            json.dumps({"routing_key": ANY_KEY, "alerts": [{"status": "on"}]}).encode(),
            "invalid event: alerts[0].status: must be one of firing, resolved; "
            "alerts[0].labels: is required",
        ),
    ],
)
def test_a_bad_raw_record_is_rejected_with_a_reason_naming_the_field(
    headers: list[tuple[str, bytes]], value: bytes | None, reason: str
) -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_record(headers, value, CONFIG, NOW)
    assert str(caught.value).startswith(reason)


def test_a_change_event_is_normalized() -> None:
    change = events_v2.normalize_change(
        {
            "routing_key": ANY_KEY,
            "payload": {
                "summary": "Deployed checkout v42",
                "timestamp": "2026-01-01T10:00:00+01:00",
                "source": "argo",
                "custom_details": {"build": 42},
            },
            "links": [{"href": "https://ci/42", "text": "build"}],
        },
        "checkout",
        NOW,
    )
    assert change.summary == "Deployed checkout v42"
    assert change.timestamp.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert change.details["build"] == 42
    assert change.links[0].href == "https://ci/42"
    with pytest.raises(InvalidInput) as caught:
        events_v2.normalize_change(
            {"payload": {"summary": "x" * 1025, "timestamp": "now"}}, "c", NOW
        )
    assert [e.field for e in caught.value.errors] == ["payload.summary", "payload.timestamp"]


def test_a_v2_trigger_without_dedup_key_gets_a_stable_generated_one() -> None:
    a = events_v2.normalize(dict(V2_BODY), "checkout", NOW)
    b = events_v2.normalize(dict(V2_BODY), "checkout", NOW)
    assert a.dedup_key == b.dedup_key and len(a.dedup_key) == 32
    assert a.event_id != b.event_id


def test_grpc_errors_use_the_request_field_names() -> None:
    request = ingest_service_pb2.SendEventRequest(routing_key=ANY_KEY)
    with pytest.raises(InvalidInput) as caught:
        events_v2.normalize(request_to_event(request), "checkout", NOW)
    assert [grpc_field(e.field) for e in caught.value.errors] == ["action"]
    request.action = alert_pb2.ALERT_ACTION_TRIGGER
    with pytest.raises(InvalidInput) as caught:
        events_v2.normalize(request_to_event(request), "checkout", NOW)
    assert [grpc_field(e.field) for e in caught.value.errors] == ["summary", "source", "severity"]
