"""Unit tests of PagerDuty Events API v2 validation and normalization (alert-ingest)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from tocsin.v1 import alert_pb2
from tocsin_common.validation import InvalidInput
from tocsin_ingest.events_v2 import (
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    default_dedup_key,
    normalize,
    parse_event,
)

RECEIVED = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
SERVICE = "checkout"

FULL_TRIGGER: dict[str, Any] = {
    "routing_key": "checkout000000000000000000000001",
    "event_action": "trigger",
    "dedup_key": "db-1/disk",
    "payload": {
        "summary": "Disk 95% full on db-1",
        "source": "db-1.example.com",
        "severity": "warning",
        "timestamp": "2026-05-04T13:30:00.250+02:00",
        "component": "postgres",
        "group": "prod-datapipe",
        "class": "disk",
        "custom_details": {"free_bytes": 1024, "mount": "/var", "tags": ["a", "b"]},
    },
    "images": [{"src": "https://img.example.com/g.png", "href": "https://g", "alt": "graph"}],
    "links": [{"href": "https://runbook.example.com/disk", "text": "Runbook"}],
    "client": "Prometheus",
    "client_url": "https://prom.example.com",
}


def trigger(**payload_changes: Any) -> dict[str, Any]:
    """A minimal valid trigger, with payload fields changed (None deletes one)."""
    body: dict[str, Any] = {
        "routing_key": "checkout000000000000000000000001",
        "event_action": "trigger",
        "payload": {"summary": "CPU high", "source": "web-1", "severity": "critical"},
    }
    for key, value in payload_changes.items():
        if value is None:
            del body["payload"][key]
        else:
            body["payload"][key] = value
    return body


def errors_of(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        normalize(body, SERVICE, RECEIVED)
    found = {e.field: e.problem for e in caught.value.errors}
    assert len(found) == len(caught.value.errors), "one error per field expected"
    return found


# --- valid events ------------------------------------------------------------------------------


def test_full_trigger_normalizes_every_field() -> None:
    body = copy.deepcopy(FULL_TRIGGER)
    alert = normalize(body, SERVICE, RECEIVED)

    assert alert.event_id
    assert alert.service_id == SERVICE
    assert alert.dedup_key == "db-1/disk"
    assert alert.action == alert_pb2.ALERT_ACTION_TRIGGER
    assert alert.severity == alert_pb2.SEVERITY_WARNING
    assert alert.summary == "Disk 95% full on db-1"
    assert alert.source == "db-1.example.com"
    assert alert.component == "postgres"
    assert alert.group == "prod-datapipe"
    assert getattr(alert, "class") == "disk"
    assert dict(alert.labels) == {
        "component": "postgres",
        "group": "prod-datapipe",
        "class": "disk",
    }
    assert MessageToDict(alert.details) == {
        "free_bytes": 1024.0,
        "mount": "/var",
        "tags": ["a", "b"],
    }
    assert [(link.href, link.text) for link in alert.links] == [
        ("https://runbook.example.com/disk", "Runbook")
    ]
    assert [(i.src, i.href, i.alt) for i in alert.images] == [
        ("https://img.example.com/g.png", "https://g", "graph")
    ]
    assert alert.client == "Prometheus"
    assert alert.client_url == "https://prom.example.com"
    assert alert.source_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 5, 4, 11, 30, 0, 250000, tzinfo=UTC
    )
    assert alert.received_time.ToDatetime(tzinfo=UTC) == RECEIVED
    assert alert.source_format == alert_pb2.SOURCE_FORMAT_EVENTS_V2
    assert body == FULL_TRIGGER  # the input is not modified


def test_minimal_trigger_defaults() -> None:
    alert = normalize(trigger(), SERVICE, RECEIVED)
    assert alert.severity == alert_pb2.SEVERITY_CRITICAL
    assert dict(alert.labels) == {}
    assert not alert.links and not alert.images and alert.client == ""
    # Without a payload timestamp, the source time is the received time.
    assert alert.source_time == alert.received_time
    assert alert.source_time.ToDatetime(tzinfo=UTC) == RECEIVED


def test_z_suffix_timestamp() -> None:
    alert = normalize(trigger(timestamp="2026-05-04T10:00:00Z"), SERVICE, RECEIVED)
    assert alert.source_time.ToDatetime(tzinfo=UTC) == datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_custom_details_as_a_string() -> None:
    alert = normalize(trigger(custom_details="free text"), SERVICE, RECEIVED)
    assert MessageToDict(alert.details) == {"details": "free text"}


def test_event_ids_are_unique() -> None:
    ids = {normalize(trigger(), SERVICE, RECEIVED).event_id for _ in range(5)}
    assert len(ids) == 5


def test_default_dedup_key_is_stable() -> None:
    one = normalize(trigger(), SERVICE, RECEIVED)
    two = normalize(trigger(), SERVICE, datetime(2026, 6, 1, tzinfo=UTC))
    assert one.dedup_key == two.dedup_key == default_dedup_key(SERVICE, "CPU high", "web-1")
    assert one.dedup_key
    # Any of service, summary or source changes the key.
    assert default_dedup_key("other", "CPU high", "web-1") != one.dedup_key
    assert normalize(trigger(summary="CPU low"), SERVICE, RECEIVED).dedup_key != one.dedup_key
    assert normalize(trigger(source="web-2"), SERVICE, RECEIVED).dedup_key != one.dedup_key
    # Severity is not part of identity.
    assert normalize(trigger(severity="info"), SERVICE, RECEIVED).dedup_key == one.dedup_key
    assert len(one.dedup_key) <= MAX_DEDUP_KEY


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("acknowledge", alert_pb2.ALERT_ACTION_ACKNOWLEDGE),
        ("resolve", alert_pb2.ALERT_ACTION_RESOLVE),
    ],
)
def test_ack_and_resolve_need_only_a_dedup_key(action: str, expected: int) -> None:
    body = {"routing_key": "k", "event_action": action, "dedup_key": "db-1/disk"}
    alert = normalize(body, SERVICE, RECEIVED)
    assert alert.action == expected
    assert alert.dedup_key == "db-1/disk"
    assert alert.summary == ""


# --- limits ----------------------------------------------------------------------------------


def test_summary_length_limit() -> None:
    assert MAX_SUMMARY == 1024
    assert normalize(trigger(summary="x" * 1024), SERVICE, RECEIVED).summary == "x" * 1024
    problem = errors_of(trigger(summary="x" * 1025))["payload.summary"]
    assert "1025" in problem and "1024" in problem


def test_dedup_key_length_limit() -> None:
    body = trigger()
    body["dedup_key"] = "k" * 255
    assert normalize(body, SERVICE, RECEIVED).dedup_key == "k" * 255
    body["dedup_key"] = "k" * 256
    problem = errors_of(body)["dedup_key"]
    assert "256" in problem and "255" in problem


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["summary", "source", "severity"])
def test_missing_payload_field_reported_by_path(field: str) -> None:
    errors = errors_of(trigger(**{field: None}))
    assert errors == {f"payload.{field}": "is required"}


@pytest.mark.parametrize("field", ["summary", "source"])
def test_blank_payload_field(field: str) -> None:
    assert errors_of(trigger(**{field: "   "})) == {f"payload.{field}": "must not be empty"}


def test_missing_event_action() -> None:
    body = trigger()
    del body["event_action"]
    assert errors_of(body) == {"event_action": "is required"}


def test_missing_payload_on_trigger() -> None:
    body = trigger()
    del body["payload"]
    errors = errors_of(body)
    assert list(errors) == ["payload"]
    assert "required" in errors["payload"]


def test_payload_not_an_object() -> None:
    body = trigger()
    body["payload"] = "CPU high"
    assert list(errors_of(body)) == ["payload"]


def test_missing_routing_key() -> None:
    body = trigger()
    del body["routing_key"]
    routing_key, _, errors = parse_event(body)
    assert routing_key == ""
    assert [(e.field, e.problem) for e in errors] == [("routing_key", "is required")]


def test_routing_key_not_a_string() -> None:
    body = trigger()
    body["routing_key"] = 42
    _, _, errors = parse_event(body)
    assert [e.field for e in errors] == ["routing_key"]
    assert "string" in errors[0].problem


def test_parse_event_returns_key_and_body() -> None:
    body = trigger()
    routing_key, event, errors = parse_event(body)
    assert routing_key == "checkout000000000000000000000001"
    assert event is body and errors == []


@pytest.mark.parametrize("body", [[], "text", 42, None, [{"routing_key": "k"}]])
def test_non_object_body(body: Any) -> None:
    routing_key, event, errors = parse_event(body)
    assert (routing_key, event) == ("", {})
    assert [(e.field, e.problem) for e in errors] == [("(body)", "must be a JSON object")]


def test_bad_severity() -> None:
    problem = errors_of(trigger(severity="urgent"))["payload.severity"]
    for allowed in ("critical", "error", "warning", "info"):
        assert allowed in problem


def test_bad_event_action() -> None:
    body = trigger()
    body["event_action"] = "escalate"
    problem = errors_of(body)["event_action"]
    assert "trigger" in problem and "acknowledge" in problem and "resolve" in problem


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_ack_and_resolve_require_dedup_key(action: str) -> None:
    body = {"routing_key": "k", "event_action": action}
    assert errors_of(body) == {"dedup_key": f"is required for {action}"}
    body["dedup_key"] = ""
    assert errors_of(body) == {"dedup_key": f"is required for {action}"}


@pytest.mark.parametrize(
    "timestamp", ["2026-05-04T10:00:00", "2026-05-04", "yesterday", "10:00:00+02:00"]
)
def test_bad_or_naive_timestamp_rejected(timestamp: str) -> None:
    problem = errors_of(trigger(timestamp=timestamp))["payload.timestamp"]
    assert "offset" in problem


def test_wrong_types_reported() -> None:
    body = trigger(summary=5, component=["x"])
    body["client"] = {"name": "x"}
    body["links"] = "https://x"
    body["images"] = [{"href": "https://x"}, "nope"]
    errors = errors_of(body)
    assert errors["payload.summary"].startswith("must be a string")
    assert errors["payload.component"].startswith("must be a string")
    assert errors["client"].startswith("must be a string")
    assert errors["links"] == "must be a list"
    assert errors["images[0].src"] == "is required"
    assert errors["images[1]"] == "must be an object"


def test_all_errors_listed_at_once() -> None:
    body = {
        "routing_key": "k",
        "event_action": "trigger",
        "dedup_key": "d" * 300,
        "links": [{"text": "no href"}],
        "payload": {
            "summary": "s" * 2000,
            "severity": "fatal",
            "timestamp": "2026-05-04T10:00:00",
        },
    }
    with pytest.raises(InvalidInput) as caught:
        normalize(body, SERVICE, RECEIVED)
    fields = {e.field for e in caught.value.errors}
    assert fields == {
        "dedup_key",
        "links[0].href",
        "payload.summary",
        "payload.source",
        "payload.severity",
        "payload.timestamp",
    }
    message = str(caught.value)
    for field in fields:
        assert field in message
