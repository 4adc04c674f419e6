"""The deploy gate's edges: insight's state snapshot from rows and config, the decision
through the gRPC message to the REST JSON (equal to ``Decision.to_dict()``), and the api's
routes against a fake DeployGateService (the live stack: tests/integration/test_deploy_gate.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import deploy_gate_service_pb2 as pb
from tocsin_api.app import create_app
from tocsin_api.deps import ApiState
from tocsin_api.routes.deploy_gates import decision as rest_decision
from tocsin_api.settings import ApiSettings
from tocsin_common.auth.policy import Principal, PrincipalKind, Resource, Role, decide
from tocsin_common.change.gate import (
    AdHocFreeze,
    GateRequest,
    GateRules,
    evaluate,
    make_override,
    with_override,
)
from tocsin_common.config.change_control import ChangeControl
from tocsin_common.config.loader import parse_config
from tocsin_insight.domain.availability import ImpactSlice, availability
from tocsin_insight.gate_api import decision_message
from tocsin_insight.gate_state import (
    dependencies_of,
    error_budget_of,
    freeze_of,
    override_of,
    state_of,
)

from tests.unit.test_api import RITA, FakeAuthenticator, FakeConfig, problem

NOW = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)

CONFIG = parse_config(
    """
version: 1
escalation_policies:
  - id: ep
    name: EP
    levels: [{delay: 5m, targets: [{type: user, id: rita}]}]
users:
  - {id: rita, name: Rita, email: rita@example.com}
services:
  - {id: web, name: Web, escalation_policy: ep, depends_on: [api]}
  - {id: api, name: API, escalation_policy: ep, depends_on: [db]}
  - {id: db, name: DB, escalation_policy: ep}
  - {id: other, name: Other, escalation_policy: ep}
"""
)


def test_dependencies_are_transitive_and_sorted() -> None:
    assert dependencies_of(CONFIG, "web") == ("api", "db")
    assert dependencies_of(CONFIG, "db") == ()
    assert dependencies_of(CONFIG, "unknown") == ()


def test_the_snapshot_keeps_only_open_incidents_and_an_empty_priority_is_none() -> None:
    rows = [
        ("i-1", "db", "high", "P1", "disk", "triggered"),
        ("i-2", "web", "low", "", "slow", "acknowledged"),
        ("i-3", "web", "high", "P1", "gone", "resolved"),
    ]
    state = state_of(CONFIG, "web", rows, {}, [], [])
    assert [(i.incident_id, i.priority) for i in state.open_incidents] == [
        ("i-1", "P1"),
        ("i-2", None),
    ]
    assert state.dependencies == {"web": ("api", "db")}


def test_an_open_incident_on_a_dependency_fails_the_gate_through_the_snapshot() -> None:
    section = ChangeControl.model_validate(
        {"gates": [{"id": "prod", "open_incidents": {"fail_at": {"priority": "P2"}}}]}
    )
    request = GateRequest("web", "production", "1.0")
    rows = [("i-1", "db", "high", "P1", "disk", "triggered")]
    state = state_of(CONFIG, "web", rows, {}, [], [])
    found = evaluate(request, state, GateRules.for_request(section, request, ["P1", "P2"]), NOW)
    assert found.outcome == "fail"
    assert "incident i-1 (priority P1) is open on dependency 'db'" in found.results[0].reason


def test_error_budget_from_availability_is_a_percentage() -> None:
    start = NOW - timedelta(days=30)
    slices = [ImpactSlice("web", NOW - timedelta(hours=1), NOW, "major")]
    found = availability("web", slices, start, NOW, 99.9)
    budget = error_budget_of(found)
    assert budget.remaining_percent == pytest.approx(found.budget_remaining_ratio * 100)
    assert budget.remaining_percent is not None and budget.remaining_percent < 0  # 1h > 43 min
    assert budget.burn_rate == found.burn_rate
    assert error_budget_of(None).remaining_percent is None


def test_freeze_and_override_rows() -> None:
    f = freeze_of(("frz-1", NOW, NOW + timedelta(hours=1), "dana", "Black Friday", ["web"], []))
    assert f == AdHocFreeze(
        "frz-1", NOW, NOW + timedelta(hours=1), "dana", "Black Friday", frozenset({"web"})
    )
    o = override_of(
        ("gate-1", "web", "prod", "1.0", "mia", "hotfix", NOW, NOW + timedelta(hours=1), "fail")
    )
    assert (o.actor, o.overridden_outcome, o.evaluation_id) == ("mia", "fail", "gate-1")
    assert o.covers(GateRequest("web", "prod", "1.0"), NOW)
    assert not o.covers(GateRequest("web", "prod", "1.1"), NOW)


def _failed_decision() -> Any:
    request = GateRequest("web", "production", "1.0", "c-1", evaluation_id="gate-x")
    state = state_of(
        CONFIG,
        "web",
        [],
        {},
        [AdHocFreeze("frz-1", NOW, NOW + timedelta(hours=1), "dana", "Black Friday")],
        [],
    )
    return evaluate(request, state, GateRules(gates=()), NOW)


def test_the_rest_json_is_the_decisions_own_dict_through_the_grpc_message() -> None:
    decision = _failed_decision()
    assert decision.outcome == "fail"
    assert rest_decision(decision_message(decision)) == decision.to_dict()
    overridden = with_override(
        decision, make_override(decision, "mia", "hotfix", NOW, timedelta(hours=1))
    )
    body = rest_decision(decision_message(overridden))
    assert body == overridden.to_dict()
    assert body["outcome"] == "pass" and body["override"]["actor"] == "mia"


def test_only_a_manager_of_the_services_team_may_override_or_freeze() -> None:
    web = Resource("service", "web", frozenset({"sre"}))
    responder = Principal("rita", PrincipalKind.USER, team_roles={"sre": Role.RESPONDER})
    manager = Principal("mia", PrincipalKind.USER, team_roles={"sre": Role.MANAGER})
    elsewhere = Principal("max", PrincipalKind.USER, team_roles={"dba": Role.MANAGER})
    assert decide(responder, "gate.evaluate", web).allowed
    for action in ("gate.override", "gate.freeze"):
        assert not decide(responder, action, web).allowed
        assert decide(manager, action, web).allowed
        assert not decide(elsewhere, action, web).allowed
    # A freeze of every service (a resource of no team): admins only.
    assert not decide(manager, "gate.freeze", Resource("deploy_gate", "all")).allowed


# -- the api's routes against a fake DeployGateService ---------------------------------------


class Refused(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class FakeGate:
    def __init__(self) -> None:
        self.requests: list[tuple[str, Any, Any]] = []
        self.fail: Refused | None = None

    async def _answer(self, name: str, request: Any, metadata: Any, reply: Any) -> Any:
        self.requests.append((name, request, metadata))
        if self.fail is not None:
            raise self.fail
        return reply

    async def Evaluate(self, request: Any, metadata: Any, timeout: float) -> Any:
        return await self._answer(
            "Evaluate", request, metadata, decision_message(_failed_decision())
        )

    async def Override(self, request: Any, metadata: Any, timeout: float) -> Any:
        return await self._answer(
            "Override", request, metadata, decision_message(_failed_decision())
        )

    async def CreateFreeze(self, request: Any, metadata: Any, timeout: float) -> Any:
        reply = pb.GateFreeze(
            freeze_id="frz-1",
            start=_ts(NOW),
            end=request.end,
            author="rita",
            reason=request.reason,
            services=list(request.services),
        )
        return await self._answer("CreateFreeze", request, metadata, reply)

    async def ListFreezes(self, request: Any, metadata: Any, timeout: float) -> Any:
        return await self._answer("ListFreezes", request, metadata, pb.ListFreezesResponse())

    async def DeleteFreeze(self, request: Any, metadata: Any, timeout: float) -> Any:
        return await self._answer("DeleteFreeze", request, metadata, pb.DeleteFreezeResponse())

    async def ChangeTimeline(self, request: Any, metadata: Any, timeout: float) -> Any:
        reply = pb.ChangeTimelineResponse(change_id=request.change_id, service="web")
        reply.entries.add(
            at=_ts(NOW),
            kind="gate_decision",
            actor="rita",
            summary="deploy gate: fail for production 1.0: prod.on_call: nobody",
            outcome="fail",
            evaluation_id="gate-1",
            environment="production",
            version="1.0",
        )
        return await self._answer("ChangeTimeline", request, metadata, reply)


class Backends:
    def __init__(self) -> None:
        self.gate = FakeGate()


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


def test_evaluate_forwards_the_body_and_credential_and_answers_the_decision(
    http: TestClient, backends: Backends
) -> None:
    reply = http.post(
        "/api/v1/deploy-gates/evaluate",
        json={"service": "web", "environment": "production", "version": "1.0", "dry_run": True},
        headers=RITA,
    )
    assert reply.status_code == 200, reply.text
    ((name, request, metadata),) = backends.gate.requests
    assert name == "Evaluate" and ("authorization", "Bearer rita") in list(metadata)
    assert (request.service, request.environment, request.version, request.dry_run) == (
        "web",
        "production",
        "1.0",
        True,
    )
    body = reply.json()
    assert body == _failed_decision().to_dict()
    assert body["outcome"] == "fail"  # what Argo Rollouts' jsonPath {$.outcome} reads


def test_a_bad_body_is_a_400_naming_the_field_before_insight_is_asked(
    http: TestClient, backends: Backends
) -> None:
    body = problem(
        http.post("/api/v1/deploy-gates/evaluate", json={"service": "web"}, headers=RITA), 400
    )
    assert [e["field"] for e in body["errors"]] == ["environment"]
    body = problem(
        http.post("/api/v1/deploy-gates/overrides", json={"evaluation_id": "g"}, headers=RITA),
        400,
    )
    assert [e["field"] for e in body["errors"]] == ["reason"]
    assert backends.gate.requests == []


def test_a_refused_override_is_a_403_problem(http: TestClient, backends: Backends) -> None:
    backends.gate.fail = Refused(grpc.StatusCode.PERMISSION_DENIED, "rita is not a manager")
    body = problem(
        http.post(
            "/api/v1/deploy-gates/overrides",
            json={"evaluation_id": "gate-x", "reason": "hotfix"},
            headers=RITA,
        ),
        403,
    )
    assert "rita is not a manager" in body["detail"]


def test_freezes_are_created_listed_and_deleted(http: TestClient, backends: Backends) -> None:
    created = http.post(
        "/api/v1/deploy-gates/freezes",
        json={"ends_at": "2026-03-25T13:00:00Z", "reason": "Black Friday", "services": ["web"]},
        headers=RITA,
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "id": "frz-1",
        "starts_at": "2026-03-25T12:00:00Z",
        "ends_at": "2026-03-25T13:00:00Z",
        "author": "rita",
        "reason": "Black Friday",
        "services": ["web"],
        "environments": [],
    }
    listed = http.get("/api/v1/deploy-gates/freezes", headers=RITA)
    assert listed.status_code == 200 and listed.json() == {"freezes": []}
    deleted = http.delete("/api/v1/deploy-gates/freezes/frz-1", headers=RITA)
    assert deleted.status_code == 204
    names = [(n, getattr(r, "freeze_id", "")) for n, r, _ in backends.gate.requests]
    assert names == [("CreateFreeze", ""), ("ListFreezes", ""), ("DeleteFreeze", "frz-1")]


def test_an_insight_field_error_is_renamed_to_the_apis_field(
    http: TestClient, backends: Backends
) -> None:
    backends.gate.fail = Refused(
        grpc.StatusCode.INVALID_ARGUMENT, "end: must be after start and in the future"
    )
    body = problem(
        http.post(
            "/api/v1/deploy-gates/freezes",
            json={"ends_at": "2020-01-01T00:00:00Z", "reason": "x"},
            headers=RITA,
        ),
        400,
    )
    assert body["errors"][0]["field"] == "ends_at"


def test_a_changes_timeline_over_rest(http: TestClient, backends: Backends) -> None:
    reply = http.get("/api/v1/changes/deploy-7/timeline", headers=RITA)
    assert reply.status_code == 200, reply.text
    ((name, request, metadata),) = backends.gate.requests
    assert name == "ChangeTimeline" and request.change_id == "deploy-7"
    assert ("authorization", "Bearer rita") in list(metadata)
    assert reply.json() == {
        "change_id": "deploy-7",
        "service": "web",
        "entries": [
            {
                "at": "2026-03-25T12:00:00Z",
                "kind": "gate_decision",
                "actor": "rita",
                "summary": "deploy gate: fail for production 1.0: prod.on_call: nobody",
                "status": "",
                "outcome": "fail",
                "evaluation_id": "gate-1",
                "environment": "production",
                "version": "1.0",
                "event_id": "",
            }
        ],
    }
    backends.gate.fail = Refused(grpc.StatusCode.NOT_FOUND, "change_id: no change 'nope'")
    problem(http.get("/api/v1/changes/nope/timeline", headers=RITA), 404)
