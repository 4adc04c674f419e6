"""The api's analytics routes: query -> InsightService request, reply -> JSON, errors
(against a fake insight stub; the live service is tests/integration/test_api_analytics.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import insight_service_pb2 as pb
from tocsin_api.app import create_app
from tocsin_api.deps import ApiState
from tocsin_api.settings import ApiSettings

from tests.unit.test_api import RITA, FakeAuthenticator, FakeConfig, problem


class Refused(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeInsight:
    def __init__(self) -> None:
        self.requests: list[tuple[str, Any, Any]] = []
        self.fail: Refused | None = None
        self.deadline = 0.0

    async def _answer(self, name: str, request: Any, metadata: Any, reply: Any) -> Any:
        self.requests.append((name, request, metadata))
        if self.fail is not None:
            raise self.fail
        return reply

    async def Report(self, request: pb.ReportRequest, metadata: Any, timeout: float) -> Any:
        start = Timestamp()
        start.FromDatetime(datetime(2026, 11, 30, tzinfo=UTC))
        row = pb.ReportRow(
            period_start=start,
            total_incident_count=3,
            seconds_to_first_ack=pb.Distribution(count=2, mean=30, p50=30, p90=38, p95=39, max=40),
            total_escalations=1,
        )
        row.group.update({"service": "web", "person": "rita"})
        reply = pb.ReportResponse(rows=[row], definition_version="v1")
        return await self._answer("Report", request, metadata, reply)

    async def Timeseries(self, request: Any, metadata: Any, timeout: float) -> Any:
        reply = pb.TimeseriesResponse(
            points=[pb.TimeseriesPoint(value=12.5, count=4)],
            trend=pb.Trend(current=12.5, previous=10, summary="no significant change"),
            definition_version="v1",
        )
        return await self._answer("Timeseries", request, metadata, reply)

    async def Overview(self, request: Any, metadata: Any, timeout: float) -> Any:
        start = Timestamp()
        start.FromDatetime(datetime(2026, 11, 4, tzinfo=UTC))
        reply = pb.OverviewResponse(
            availability=[
                pb.ServiceAvailability(
                    service_id="web",
                    target_percent=99.9,
                    window_start=start,
                    availability=0.9995,
                    budget_remaining_ratio=0.5,
                    burn_rate=2.0,
                )
            ],
            change_failure=pb.ChangeFailure(
                total_changes=4,
                failed_changes=1,
                change_failure_rate=0.25,
                recovery_seconds=pb.Distribution(count=1, mean=600, max=600),
            ),
            interruptions=[
                pb.PersonInterruptions(
                    user_id="rita",
                    total_notifications=5,
                    total_interruptions=3,
                    total_business_hour_interruptions=1,
                    total_off_hour_interruptions=1,
                    total_sleep_hour_interruptions=1,
                )
            ],
            top_sources=[pb.NoisySource(source="prometheus", alerts=7)],
            definition_version="v2",
        )
        return await self._answer("Overview", request, metadata, reply)

    async def AutomationDryRun(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.deadline = timeout
        since, until = Timestamp(), Timestamp()
        since.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
        until.FromDatetime(datetime(2026, 12, 1, tzinfo=UTC))
        reply = pb.AutomationDryRunResponse(
            rule_id="restart",
            since=since,
            until=until,
            fires=3,
            incidents=2,
            by_trigger={"triggered": 2, "level 2": 1},
            sample=["inc-1", "inc-2"],
            summary="rule 'restart' would have fired 3 times in 30 days",
            incidents_read=9,
            definition_version="g4",
        )
        return await self._answer("AutomationDryRun", request, metadata, reply)

    async def ReviewDraft(self, request: Any, metadata: Any, timeout: float) -> Any:
        reply = pb.ReviewDraftResponse(markdown="# Disk full\n")
        return await self._answer("ReviewDraft", request, metadata, reply)


class Backends:
    def __init__(self) -> None:
        self.insight = FakeInsight()


@pytest.fixture
def backends() -> Backends:
    return Backends()


@pytest.fixture
def http(backends: Backends) -> TestClient:
    state = ApiState(
        config=FakeConfig(),
        authenticator=FakeAuthenticator(),
        backends=backends,  # type: ignore[arg-type]
        settings=ApiSettings.from_env({}),
        feeds=lambda: None,  # type: ignore[arg-type,return-value]
    )
    return TestClient(create_app(state), raise_server_exceptions=False)


def test_a_report_forwards_filters_and_credential_and_names_groups_as_the_api(
    http: TestClient, backends: Backends
) -> None:
    reply = http.get(
        "/api/v1/analytics/incidents?team_id=sre&urgency=high&priority=P1&time_zone=Europe/Paris"
        "&since=2026-11-01T00:00:00Z&until=2026-12-01T00:00:00Z"
        "&group_by=service&group_by=user&period=week",
        headers=RITA,
    )
    assert reply.status_code == 200, reply.text
    ((name, request, metadata),) = backends.insight.requests
    assert name == "Report" and ("authorization", "Bearer rita") in list(metadata)
    assert list(request.group_by) == ["service", "person"] and request.period == "week"
    f = request.filter
    assert (f.team_id, f.urgency, f.priority, f.time_zone) == ("sre", "high", "P1", "Europe/Paris")
    assert f.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert f.until.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    body = reply.json()
    assert body["group_by"] == ["service", "user"] and body["aggregate_unit"] == "week"
    assert body["time_zone"] == "Europe/Paris" and body["definition_version"] == "v1"
    (row,) = body["data"]
    assert (row["service_id"], row["user_id"]) == ("web", "rita")
    assert row["period_start"] == "2026-11-30T00:00:00Z"
    assert row["total_incident_count"] == 3 and row["total_escalations"] == 1
    assert row["seconds_to_first_ack"] == {
        "count": 2,
        "mean": 30.0,
        "p50": 30.0,
        "p90": 38.0,
        "p95": 39.0,
        "max": 40.0,
    }


def test_bad_report_queries_are_400s_naming_the_field_before_insight_is_asked(
    http: TestClient, backends: Backends
) -> None:
    body = problem(http.get("/api/v1/analytics/incidents?group_by=planet", headers=RITA), 400)
    assert body["errors"][0]["field"] == "group_by[0]"
    body = problem(
        http.get("/api/v1/analytics/incidents?group_by=team&group_by=team", headers=RITA), 400
    )
    assert body["errors"][0]["field"] == "group_by[1]"
    body = problem(http.get("/api/v1/analytics/incidents?period=year", headers=RITA), 400)
    assert body["errors"][0]["field"] == "period"
    body = problem(
        http.get(
            "/api/v1/analytics/incidents?since=2026-12-01T00:00:00Z&until=2026-11-01T00:00:00Z",
            headers=RITA,
        ),
        400,
    )
    assert body["errors"][0]["field"] == "until"
    body = problem(http.get("/api/v1/analytics/timeseries?metric=happiness", headers=RITA), 400)
    assert body["errors"][0]["field"] == "metric"
    assert backends.insight.requests == []


def test_insights_errors_keep_their_field_in_the_apis_name(
    http: TestClient, backends: Backends
) -> None:
    backends.insight.fail = Refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter.time_zone: 'Mars/Olympus' is not an IANA time zone",
    )
    body = problem(
        http.get("/api/v1/analytics/incidents?time_zone=Mars/Olympus", headers=RITA), 400
    )
    assert body["errors"] == [
        {"field": "time_zone", "problem": "'Mars/Olympus' is not an IANA time zone"}
    ]
    backends.insight.fail = Refused(grpc.StatusCode.PERMISSION_DENIED, "needs manager on dba")
    assert problem(http.get("/api/v1/analytics/incidents", headers=RITA), 403)["detail"] == (
        "needs manager on dba"
    )
    backends.insight.fail = Refused(grpc.StatusCode.UNAVAILABLE, "connect failed")
    problem(http.get("/api/v1/analytics/incidents", headers=RITA), 503)


def test_timeseries_and_review_draft(http: TestClient, backends: Backends) -> None:
    body = http.get(
        "/api/v1/analytics/timeseries?metric=seconds_to_first_ack&period=week", headers=RITA
    ).json()
    assert body["points"] == [{"period_start": None, "value": 12.5, "count": 4}]
    assert body["trend"]["summary"] == "no significant change" and body["aggregate_unit"] == "week"
    reply = http.get("/api/v1/incidents/inc-1/review_draft", headers=RITA)
    assert reply.status_code == 200 and reply.text == "# Disk full\n"
    assert reply.headers["content-type"].startswith("text/markdown")
    assert backends.insight.requests[-1][1].incident_id == "inc-1"


def test_the_overview_forwards_filters_and_names_every_figure(
    http: TestClient, backends: Backends
) -> None:
    reply = http.get(
        "/api/v1/analytics/overview?team_id=sre&service_id=web&top_sources=3", headers=RITA
    )
    assert reply.status_code == 200, reply.text
    ((name, request, metadata),) = backends.insight.requests
    assert name == "Overview" and ("authorization", "Bearer rita") in list(metadata)
    assert (request.filter.team_id, request.filter.service_id) == ("sre", "web")
    assert request.top_sources == 3
    body = reply.json()
    (a,) = body["availability"]
    assert (a["service_id"], a["target_percent"], a["availability"]) == ("web", 99.9, 0.9995)
    assert a["window_start"] == "2026-11-04T00:00:00Z" and a["window_end"] is None
    assert (a["budget_remaining_ratio"], a["burn_rate"]) == (0.5, 2.0)
    cf = body["change_failure"]
    assert (cf["total_changes"], cf["failed_changes"], cf["change_failure_rate"]) == (4, 1, 0.25)
    assert cf["recovery_seconds"]["mean"] == 600.0 and cf["recovery_seconds"]["count"] == 1
    assert body["interruptions"] == [
        {
            "user_id": "rita",
            "total_notifications": 5,
            "total_interruptions": 3,
            "total_business_hour_interruptions": 1,
            "total_off_hour_interruptions": 1,
            "total_sleep_hour_interruptions": 1,
        }
    ]
    assert body["top_sources"] == [{"source": "prometheus", "alerts": 7}]
    assert body["definition_version"] == "v2"


def test_bad_overview_queries_name_the_field(http: TestClient, backends: Backends) -> None:
    body = problem(http.get("/api/v1/analytics/overview?top_sources=0", headers=RITA), 400)
    assert body["errors"][0]["field"] == "top_sources"
    body = problem(http.get("/api/v1/analytics/overview?since=2026-01-01T00:00", headers=RITA), 400)
    assert body["errors"][0]["field"] == "since"
    assert backends.insight.requests == []
    backends.insight.fail = Refused(grpc.StatusCode.PERMISSION_DENIED, "needs viewer on dba")
    body = problem(http.get("/api/v1/analytics/overview?team_id=dba", headers=RITA), 403)
    assert body["detail"] == "needs viewer on dba"


def test_an_automation_dry_run_forwards_the_rule_and_window_with_the_credential(
    http: TestClient, backends: Backends
) -> None:
    rule = {
        "id": "adhoc",
        "on": ["triggered"],
        "action": {"type": "incident", "command": "resolve"},
    }
    reply = http.post(
        "/api/v1/automation/dry-run",
        json={"rule": rule, "since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"},
        headers=RITA,
    )
    assert reply.status_code == 200, reply.text
    ((name, request, metadata),) = backends.insight.requests
    assert name == "AutomationDryRun" and ("authorization", "Bearer rita") in list(metadata)
    assert backends.insight.deadline == 60  # a long window takes longer than a plain call
    assert request.rule_id == "" and json.loads(request.rule_json) == rule
    assert request.since.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert request.until.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert reply.json() == {
        "rule_id": "restart",
        "since": "2026-11-01T00:00:00Z",
        "until": "2026-12-01T00:00:00Z",
        "fires": 3,
        "incidents": 2,
        "by_trigger": {"level 2": 1, "triggered": 2},
        "sample": ["inc-1", "inc-2"],
        "summary": "rule 'restart' would have fired 3 times in 30 days",
        "incidents_read": 9,
        "definition_version": "g4",
    }
    by_id = http.post("/api/v1/automation/dry-run", json={"rule_id": "restart"}, headers=RITA)
    assert by_id.status_code == 200, by_id.text
    request = backends.insight.requests[-1][1]
    assert request.rule_id == "restart" and not request.HasField("since")


def test_an_automation_dry_run_names_exactly_one_rule_and_passes_insights_refusals(
    http: TestClient, backends: Backends
) -> None:
    for body in ({}, {"rule_id": "x", "rule": {"id": "x"}}):
        found = problem(http.post("/api/v1/automation/dry-run", json=body, headers=RITA), 400)
        assert found["errors"][0]["field"] == "rule_id, rule"
    assert backends.insight.requests == []
    backends.insight.fail = Refused(grpc.StatusCode.INVALID_ARGUMENT, "rule.on: Field required")
    found = problem(
        http.post("/api/v1/automation/dry-run", json={"rule": {"id": "x"}}, headers=RITA), 400
    )
    assert found["errors"][0] == {"field": "rule.on", "problem": "Field required"}
    backends.insight.fail = Refused(
        grpc.StatusCode.PERMISSION_DENIED, "automation.dry_run needs manager on team 'sre'"
    )
    problem(http.post("/api/v1/automation/dry-run", json={"rule_id": "x"}, headers=RITA), 403)
    problem(http.post("/api/v1/automation/dry-run", json={"rule_id": "x"}), 401)
