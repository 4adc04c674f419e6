"""Alertmanager webhook (version 4) -> normalized alerts, against real 0.25 payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tocsin.v1 import alert_pb2
from tocsin_common.validation import InvalidInput
from tocsin_ingest import alertmanager

NOW = datetime(2026, 11, 26, 13, 30, tzinfo=UTC)

# Bodies Prometheus Alertmanager 0.25.0 (Debian package) POSTed to a webhook receiver,
# byte for byte (copied from shared/samples/): a group of two firing alerts, then the same
# group after one of them resolved.
SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "alertmanager"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def test_every_firing_alert_of_the_group_becomes_one_trigger_keyed_by_fingerprint() -> None:
    alerts = alertmanager.normalize(
        sample("alertmanager-0.25-webhook-firing.json"), "checkout", "key1", NOW
    )
    assert [a.dedup_key for a in alerts] == ["711c95e367dfcd66", "35741a35a97e38e6"]
    first = alerts[0]
    assert first.action == alert_pb2.ALERT_ACTION_TRIGGER
    assert first.service_id == "checkout"
    assert first.integration_key == "key1"
    assert first.source_format == alert_pb2.SOURCE_FORMAT_ALERTMANAGER
    assert first.severity == alert_pb2.SEVERITY_CRITICAL
    assert first.summary == "5xx ratio above 5% for 5m"
    assert first.source == "checkout-7d9f:8080"
    assert dict(first.labels) == {
        "alertname": "HighErrorRate",
        "instance": "checkout-7d9f:8080",
        "job": "checkout",
        "service": "checkout",
        "severity": "critical",
    }
    assert first.details["description"] == "checkout is failing 7.2% of requests"
    assert first.details["runbook_url"] == "https://runbooks.example.com/checkout/high-error-rate"
    assert "endsAt" not in first.details  # Go's zero time means "still firing"
    assert first.links[0].href.startswith("http://prometheus.example.com:9090/graph?g0.expr=")
    assert first.links[1].text == "Runbook"
    assert first.source_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 11, 26, 13, 28, 57, 362245, tzinfo=UTC
    )
    assert first.received_time.ToDatetime(tzinfo=UTC) == NOW
    assert first.client == "Alertmanager"
    assert first.client_url == "http://vm:19094"
    assert len({a.event_id for a in alerts}) == 2


def test_a_resolved_entry_resolves_its_alert_while_the_group_still_fires() -> None:
    resolved, firing = alertmanager.normalize(
        sample("alertmanager-0.25-webhook-partly-resolved.json"), "checkout", "key1", NOW
    )
    assert (resolved.dedup_key, resolved.action) == (
        "711c95e367dfcd66",
        alert_pb2.ALERT_ACTION_RESOLVE,
    )
    assert resolved.details["endsAt"] == "2026-11-26T13:29:00+00:00"
    assert (firing.dedup_key, firing.action) == ("35741a35a97e38e6", alert_pb2.ALERT_ACTION_TRIGGER)


def minimal(**entry: Any) -> dict[str, Any]:
    alert = {"status": "firing", "labels": {"alertname": "DiskFull"}, "fingerprint": "f1"}
    alert.update(entry)
    return {"version": "4", "alerts": [alert]}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", alert_pb2.SEVERITY_CRITICAL),
        ("page", alert_pb2.SEVERITY_CRITICAL),
        ("ERROR", alert_pb2.SEVERITY_ERROR),
        ("warning", alert_pb2.SEVERITY_WARNING),
        ("warn", alert_pb2.SEVERITY_WARNING),
        ("info", alert_pb2.SEVERITY_INFO),
        ("none", alert_pb2.SEVERITY_INFO),
        ("whatever", alert_pb2.SEVERITY_ERROR),
        (None, alert_pb2.SEVERITY_ERROR),
    ],
)
def test_severity_label_maps_onto_four_levels_with_error_by_default(
    label: str | None, expected: int
) -> None:
    labels = {"alertname": "DiskFull"} | ({"severity": label} if label else {})
    (alert,) = alertmanager.normalize(minimal(labels=labels), "s", "k", NOW)
    assert alert.severity == expected


def test_summary_falls_back_to_alertname_and_time_to_receipt() -> None:
    (alert,) = alertmanager.normalize(minimal(), "s", "k", NOW)
    assert alert.summary == "DiskFull"
    assert alert.source_time == alert.received_time
    assert getattr(alert, "class") == "DiskFull"


def test_a_missing_fingerprint_is_derived_from_the_label_set() -> None:
    body = minimal()
    del body["alerts"][0]["fingerprint"]
    (a,) = alertmanager.normalize(body, "s", "k", NOW)
    body["alerts"][0]["labels"] = {"alertname": "DiskFull"}
    (b,) = alertmanager.normalize(body, "s", "k", NOW)
    assert a.dedup_key == b.dedup_key and len(a.dedup_key) == 16


def test_a_long_summary_is_cut_to_the_limit_rather_than_refused() -> None:
    (alert,) = alertmanager.normalize(minimal(annotations={"summary": "x" * 5000}), "s", "k", NOW)
    assert len(alert.summary) == 1024


def test_every_problem_is_listed_by_field_path() -> None:
    body = {
        "version": "3",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "ok"}, "fingerprint": "a"},
            {"status": "pending", "labels": {"n": 1}, "startsAt": "yesterday"},
            "nope",
            {"annotations": [], "fingerprint": "y" * 300},
        ],
    }
    with pytest.raises(InvalidInput) as caught:
        alertmanager.normalize(body, "s", "k", NOW)
    problems = {(e.field, e.problem) for e in caught.value.errors}
    fields = {f for f, _ in problems}
    assert fields == {
        "version",
        "alerts[1].status",
        "alerts[1].labels.n",
        "alerts[1].startsAt",
        "alerts[2]",
        "alerts[3].status",
        "alerts[3].labels",
        "alerts[3].annotations",
        "alerts[3].fingerprint",
    }
    assert ("alerts[3].labels", "is required") in problems
    assert ("alerts[2]", "must be an object, not string") in problems


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "(body)"),
        ({}, "alerts"),
        ({"alerts": {}}, "alerts"),
        ({"alerts": []}, "alerts"),
        ({"alerts": [{}] * 1001}, "alerts"),
    ],
)
def test_the_shape_of_the_group_is_checked(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        alertmanager.normalize(body, "s", "k", NOW)
    assert caught.value.errors[0].field == field
