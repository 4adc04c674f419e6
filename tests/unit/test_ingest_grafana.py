"""Grafana unified-alerting webhook -> normalized alerts."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from tocsin.v1 import alert_pb2
from tocsin_common.validation import InvalidInput
from tocsin_ingest import grafana

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# The shape Grafana (>= 9) POSTs from a webhook contact point.
GRAFANA = {
    "receiver": "tocsin",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "High memory usage",
                "grafana_folder": "Infra",
                "team": "blue",
                "severity": "warning",
            },
            "annotations": {"description": "memory above 90%", "runbook_url": ""},
            "startsAt": "2026-03-01T12:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example.com/alerting/grafana/abc/view",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://grafana.example.com/alerting/silence/new?matcher=x",
            "dashboardURL": "https://grafana.example.com/d/dash",
            "panelURL": "https://grafana.example.com/d/dash?viewPanel=2",
            "values": {"B": 94.23943737541908, "C": 1},
            "valueString": "[ var='B' labels={} value=94.2 ], [ var='C' labels={} value=1 ]",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "Disk", "team": "blue"},
            "annotations": {"summary": "disk is fine again"},
            "startsAt": "2026-03-01T10:00:00Z",
            "endsAt": "2026-03-01T11:00:00Z",
            "generatorURL": "",
            "fingerprint": "0123456789abcdef",
            "silenceURL": "",
            "dashboardURL": "",
            "panelURL": "",
            "values": None,
            "valueString": "",
        },
    ],
    "groupLabels": {"team": "blue"},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://grafana.example.com/",
    "version": "1",
    "groupKey": '{}/{}:{team="blue"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:1, RESOLVED:1] (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nValue: B=94.2, C=1\n",
}


def test_each_grafana_alert_becomes_one_normalized_alert() -> None:
    firing, resolved = grafana.normalize(copy.deepcopy(GRAFANA), "payments", "gk", NOW)
    assert firing.dedup_key == "c6eadffa33fcdf37"
    assert firing.action == alert_pb2.ALERT_ACTION_TRIGGER
    assert firing.source_format == alert_pb2.SOURCE_FORMAT_GRAFANA
    assert firing.severity == alert_pb2.SEVERITY_WARNING
    assert firing.summary == "High memory usage"
    assert firing.labels["grafana_folder"] == "Infra"
    assert firing.details["description"] == "memory above 90%"
    assert firing.details["values"]["B"] == pytest.approx(94.239437)
    assert firing.details["valueString"].startswith("[ var='B'")
    assert firing.details["orgId"] == 1
    assert [(link.text, link.href) for link in firing.links] == [
        ("Source", "https://grafana.example.com/alerting/grafana/abc/view"),
        ("Dashboard", "https://grafana.example.com/d/dash"),
        ("Panel", "https://grafana.example.com/d/dash?viewPanel=2"),
        ("Silence", "https://grafana.example.com/alerting/silence/new?matcher=x"),
    ]
    assert firing.source_time.ToDatetime(tzinfo=UTC) == datetime(
        2026, 3, 1, 10, 51, 3, 157076, tzinfo=UTC
    )
    assert firing.client == "Grafana"
    assert firing.client_url == "https://grafana.example.com/"
    assert resolved.action == alert_pb2.ALERT_ACTION_RESOLVE
    assert resolved.summary == "disk is fine again"
    assert resolved.severity == alert_pb2.SEVERITY_ERROR  # no severity label: the default
    assert list(resolved.links) == []


def test_grafana_specific_fields_are_type_checked() -> None:
    body: dict[str, Any] = copy.deepcopy(GRAFANA)
    body["orgId"] = "one"
    body["title"] = 5
    body["alerts"][0]["values"] = {"B": "high"}
    body["alerts"][0]["dashboardURL"] = 7
    body["alerts"][1]["values"] = []
    with pytest.raises(InvalidInput) as caught:
        grafana.normalize(body, "payments", "gk", NOW)
    assert {e.field for e in caught.value.errors} == {
        "orgId",
        "title",
        "alerts[0].values.B",
        "alerts[0].dashboardURL",
        "alerts[1].values",
    }


def test_a_legacy_grafana_payload_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInput) as caught:
        grafana.normalize({"ruleName": "x", "state": "alerting"}, "s", "k", NOW)
    assert any("legacy" in e.problem for e in caught.value.errors)
    assert any(e.field == "alerts" for e in caught.value.errors)


def test_the_title_is_the_last_resort_summary() -> None:
    body = {"title": "[FIRING:1] thing", "alerts": [{"status": "firing", "labels": {}}]}
    (alert,) = grafana.normalize(body, "s", "k", NOW)
    assert alert.summary == "[FIRING:1] thing"
