"""The api's pure parts and its HTTP edge without the other services: gRPC statuses as
problems naming the field, validation as 400, the body limit (413), authentication before
anything else (401), the rate-limit decision, ETags, SSE framing, settings, masking."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_api import convert, sse
from tocsin_api.app import create_app
from tocsin_api.deps import ApiState
from tocsin_api.problems import from_grpc
from tocsin_api.ratelimit import verdict
from tocsin_api.routes.incidents import etag_matches
from tocsin_api.settings import ApiSettings
from tocsin_common.auth.access import AuthFailure
from tocsin_common.auth.policy import Principal, PrincipalKind, Role
from tocsin_common.config.loader import parse_config
from tocsin_common.settings import SettingsError


def test_grpc_statuses_map_to_http_and_keep_the_field() -> None:
    cases = {
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.UNAVAILABLE: 503,
    }
    for code, status in cases.items():
        assert from_grpc(code, "x: y").status == status
    problem = from_grpc(
        grpc.StatusCode.INVALID_ARGUMENT,
        "until: must be in the future; override.user_id: is required",
        {"until": "duration_seconds", "override.user_id": "user_id"},
    )
    assert [(e.field, e.problem) for e in problem.errors] == [
        ("duration_seconds", "must be in the future"),
        ("user_id", "is required"),
    ]
    assert problem.detail.startswith("duration_seconds: must be in the future")
    assert from_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, "full").headers["Retry-After"] == "1"
    internal = from_grpc(grpc.StatusCode.INTERNAL, "Traceback: secret detail")
    assert internal.status == 502 and "secret" not in internal.detail
    body = from_grpc(grpc.StatusCode.NOT_FOUND, "incident_id: no incident 'x'").body()
    assert body["title"] == "Not Found" and body["type"].endswith("/not-found")


def test_the_rate_limit_decision() -> None:
    assert verdict(5, 5, now=120.0).allowed
    refused = verdict(6, 5, now=125.5)
    assert not refused.allowed and refused.retry_after_s == 55
    assert verdict(6, 5, now=179.9).retry_after_s == 1


def test_if_match_compares_etags_strong_weak_and_star() -> None:
    assert etag_matches('"abc"', '"abc"') and etag_matches('W/"abc"', '"abc"')
    assert etag_matches('"x", "abc"', '"abc"') and etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')


def test_an_incident_s_etag_changes_with_any_change() -> None:
    incident = incident_pb2.Incident(incident_id="i", status=incident_pb2.INCIDENT_STATUS_TRIGGERED)
    before = convert.etag(incident)
    assert convert.etag(incident) == before
    incident.updated_at.FromSeconds(1_800_000_000)  # a timeline entry: a page delivered
    assert convert.etag(incident) == before
    incident.status = incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED
    assert convert.etag(incident) != before
    acknowledged = convert.etag(incident)
    incident.alert_count = 2  # another alert joined
    assert convert.etag(incident) != acknowledged


def test_sse_frames_round_trip() -> None:
    framed = sse.frame("incident", {"a": "line\nbreak"}, "42-7")
    assert framed.endswith(b"\n\n") and framed.count(b"\n") == 4
    (parsed,) = sse.parse((sse.KEEPALIVE + framed).decode())
    assert parsed == {"id": "42-7", "event": "incident", "data": '{"a":"line\\nbreak"}'}


def test_settings_from_the_environment() -> None:
    settings = ApiSettings.from_env({}, http_port=9000)
    assert settings.public_url == "http://127.0.0.1:9000" and settings.rate_limit_per_minute == 600
    assert ApiSettings.from_env({"TOCSIN_API_PUBLIC_URL": "https://api.x/"}).public_url == (
        "https://api.x"
    )
    with pytest.raises(SettingsError, match="TOCSIN_API_RATE_LIMIT_PER_MINUTE"):
        ApiSettings.from_env({"TOCSIN_API_RATE_LIMIT_PER_MINUTE": "0"})
    with pytest.raises(SettingsError, match="TOCSIN_API_MAX_BODY_BYTES"):
        ApiSettings.from_env({"TOCSIN_API_MAX_BODY_BYTES": "lots"})
    with pytest.raises(SettingsError, match="TOCSIN_API_PUBLIC_URL"):
        ApiSettings.from_env({"TOCSIN_API_PUBLIC_URL": "ftp://x"})
    assert settings.token_cache_seconds == 5.0
    assert ApiSettings.from_env({"TOCSIN_API_TOKEN_CACHE_SECONDS": "0"}).token_cache_seconds == 0
    with pytest.raises(SettingsError, match="TOCSIN_API_TOKEN_CACHE_SECONDS='6': expected 0 to 5"):
        ApiSettings.from_env({"TOCSIN_API_TOKEN_CACHE_SECONDS": "6"})
    with pytest.raises(SettingsError, match="TOCSIN_API_TOKEN_CACHE_SECONDS='soon'"):
        ApiSettings.from_env({"TOCSIN_API_TOKEN_CACHE_SECONDS": "soon"})


CONFIG = parse_config(
    """
version: 1
services:
  - id: web
    name: Web
    team: sre
    escalation_policy: p
    integrations: [{key: webkey0000000000000000000000abcd}]
  - {id: db, name: DB, team: dba, escalation_policy: p}
teams:
  - {id: sre, name: SRE, members: [rita]}
  - {id: dba, name: DBA, members: [dan]}
users:
  - {id: rita, name: Rita, email: rita@example.com}
  - {id: dan, name: Dan, email: dan@example.com}
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: rita}]}]}
"""
)


@dataclass
class FakeConfig:
    current: Any = CONFIG


class FakeAuthenticator:
    """'Bearer rita' is Rita (responder on sre); anything else fails."""

    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        if not authorization:
            return AuthFailure("no credential: send 'Authorization: Bearer <token>'")
        if authorization == "Bearer rita":
            return Principal("rita", PrincipalKind.USER, team_roles={"sre": Role.RESPONDER})
        return AuthFailure("unknown, revoked or expired token")


class NoBackends:
    """Any gRPC call fails the test: these requests must be answered before one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a gRPC call ({name}) was made")


@pytest.fixture
def http() -> TestClient:
    state = ApiState(
        config=FakeConfig(),
        authenticator=FakeAuthenticator(),
        backends=NoBackends(),  # type: ignore[arg-type]
        settings=ApiSettings.from_env({"TOCSIN_API_MAX_BODY_BYTES": "1000"}),
        feeds=lambda: None,  # type: ignore[arg-type,return-value]
    )
    return TestClient(create_app(state, max_body_bytes=1000), raise_server_exceptions=False)


RITA = {"Authorization": "Bearer rita"}


def problem(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    return body


def test_a_bad_credential_is_401_before_any_service_is_called(http: TestClient) -> None:
    assert "no credential" in problem(http.get("/api/v1/incidents"), 401)["detail"]
    reply = http.get("/api/v1/incidents", headers={"Authorization": "Bearer nope"})
    assert problem(reply, 401)["detail"] == "unknown, revoked or expired token"
    assert reply.headers["www-authenticate"] == "Bearer"


def test_every_route_that_needs_a_credential_refuses_a_caller_without_one(
    http: TestClient,
) -> None:
    """Each route the OpenAPI document marks as needing a bearer (every new one included:
    status updates, component overrides, automation approvals, change timelines, ...)
    answers 401 to a caller with no credential, before any body is read."""
    spec = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    checked = 0
    for path, operations in spec["paths"].items():
        url = re.sub(r"\{[^}]+\}", "x", path)
        for method, operation in operations.items():
            if operation.get("security") != [{"bearer": []}] or path.endswith("/stream"):
                continue
            reply = http.request(method.upper(), url, json={})
            assert reply.status_code == 401, (method, path, reply.status_code)
            checked += 1
    assert checked >= 55  # the routes there were when this was written


def test_validation_errors_are_400_problems_naming_the_field(http: TestClient) -> None:
    body = problem(http.get("/api/v1/incidents?limit=500", headers=RITA), 400)
    assert [e["field"] for e in body["errors"]] == ["limit"]
    body = problem(
        http.post("/api/v1/incidents/i/snooze", json={"duration_seconds": "soon"}, headers=RITA),
        400,
    )
    assert body["errors"][0]["field"] == "duration_seconds"
    body = problem(
        http.post("/api/v1/incidents/i/reassign", json={"user_ids": ["a", "b"]}, headers=RITA),
        400,
    )
    assert body["errors"][0]["field"] == "user_ids"
    body = problem(http.post("/api/v1/tokens", json={"name": "x", "extra": 1}, headers=RITA), 400)
    assert body["errors"][0]["field"] == "extra"


def test_a_body_over_the_limit_is_413(http: TestClient) -> None:
    reply = http.post("/api/v1/incidents/i/notes", json={"content": "x" * 2000}, headers=RITA)
    assert "1000 bytes" in problem(reply, 413)["detail"]

    def chunks() -> Any:  # no Content-Length: counted as it streams in
        for _ in range(5):
            yield b"x" * 400

    reply = http.post(
        "/api/v1/incidents/i/notes",
        content=chunks(),
        headers={**RITA, "content-type": "application/json"},
    )
    problem(reply, 413)


def test_config_resources_are_decided_by_the_shared_policy(http: TestClient) -> None:
    services = http.get("/api/v1/services", headers=RITA).json()["services"]
    assert [s["id"] for s in services] == ["web"]
    assert services[0]["integrations"][0]["key"] == "****abcd"
    assert "needs viewer" in problem(http.get("/api/v1/services/db", headers=RITA), 403)["detail"]
    problem(http.get("/api/v1/services/none", headers=RITA), 404)
    assert http.get("/api/v1/users/me", headers=RITA).json()["team_roles"] == {"sre": "responder"}
    problem(http.get("/api/v1/users/dan/notification_rules", headers=RITA), 403)
    assert http.get("/api/v1/users/rita/notification_rules", headers=RITA).json() == {
        "high": [],
        "low": [],
    }


def test_unknown_routes_and_methods_are_problems(http: TestClient) -> None:
    problem(http.get("/api/v1/nothing", headers=RITA), 404)
    problem(http.put("/api/v1/incidents", headers=RITA), 405)
    assert http.get("/healthz").json() == {"status": "ok"}


def test_requests_are_timed_by_route_template(http: TestClient) -> None:
    from prometheus_client import REGISTRY

    labels = {"method": "GET", "route": "/api/v1/services/{service_id}", "status": "403"}
    before = REGISTRY.get_sample_value("tocsin_api_request_seconds_count", labels) or 0
    http.get("/api/v1/services/db", headers=RITA)
    assert REGISTRY.get_sample_value("tocsin_api_request_seconds_count", labels) == before + 1


def test_one_server_span_per_request_named_by_its_route_with_grpc_calls_inside() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner: list[Any] = []

    class Feeds:
        async def find(self, token: str) -> None:
            inner.append(trace.get_current_span().get_span_context())

    state = ApiState(
        config=FakeConfig(),
        authenticator=FakeAuthenticator(),
        backends=NoBackends(),  # type: ignore[arg-type]
        settings=ApiSettings.from_env({}),
        feeds=lambda: Feeds(),  # type: ignore[arg-type,return-value]
    )
    import tocsin_api.app as app_module

    original = app_module.tracer
    try:
        # The middleware takes its tracer when the app first serves: from the test provider.
        app_module.tracer = lambda name: provider.get_tracer(name)  # type: ignore[assignment]
        reply = TestClient(create_app(state)).get("/api/v1/calendars/tcal_secretvalue.ics")
    finally:
        app_module.tracer = original
    assert reply.status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /api/v1/calendars/{feed_token}.ics"
    assert "secretvalue" not in str(dict(span.attributes or {}))
    assert inner and inner[0].span_id == span.context.span_id  # the handler ran inside it


def test_audit_cursors_resume_within_an_instant() -> None:
    from tocsin_api.problems import Problem
    from tocsin_api.routes.admin import decode_cursor, encode_cursor

    records = [
        {"id": "a", "at": "2026-12-04T10:00:01.000002Z"},
        {"id": "b", "at": "2026-12-04T10:00:00.000001Z"},
        {"id": "c", "at": "2026-12-04T10:00:00.000001Z"},
    ]
    at, shown = decode_cursor(encode_cursor(records))
    assert at.isoformat() == "2026-12-04T10:00:00.000001+00:00" and shown == {"b", "c"}
    with pytest.raises(Problem) as bad:
        decode_cursor("bm90IGpzb24")
    assert bad.value.status == 400 and bad.value.errors[0].field == "cursor"


def test_a_probable_cause_s_change_says_its_kind_status_and_version() -> None:
    event = alert_pb2.ChangeEvent(
        event_id="e1",
        service_id="web",
        summary="Deploy web 1.4.2",
        source="argo",
        change_id="deploy-42",
        kind=alert_pb2.CHANGE_KIND_FEATURE_FLAG,
        status=alert_pb2.CHANGE_STATUS_ROLLED_BACK,
        version="1.4.2",
        environment="production",
    )
    shown = convert.change(event)
    assert shown == {
        "id": "e1",
        "summary": "Deploy web 1.4.2",
        "source": "argo",
        "timestamp": None,
        "service_id": "web",
        "change_id": "deploy-42",
        "kind": "feature_flag",
        "status": "rolled_back",
        "version": "1.4.2",
        "environment": "production",
        "rollback_of": None,
    }
    # A plain PagerDuty change event says none of it.
    plain = convert.change(alert_pb2.ChangeEvent(event_id="e2", summary="x"))
    assert plain["kind"] is None and plain["status"] is None and plain["version"] is None
