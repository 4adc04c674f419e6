"""The deploy gate through the whole stack (api -> insight's DeployGateService, insight's
facts fed by ingest -> correlation -> escalation): a config freeze window fails the gate
with its reason; an open high-urgency incident on the service fails it with that reason;
a manager's override then passes it, audited with the manager's name; a responder's
override is 403; an ad-hoc freeze made over REST fails the gate until it is deleted; the
on-call rule fails while nobody is on call (escalation's WhoIsOnCall) and passes once a
manager's schedule override puts someone there; the changes-in-flight rule fails while
another change is started (change events through ingest) and passes once it succeeded; and
the decisions asked with a change's id are on that change's timeline."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tocsin.v1 import auth_service_pb2, auth_service_pb2_grpc

from tests.integration.api_client import (
    assert_problem,
    incident_titled,
    trigger,
    until_status,
    user_client,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

KEY = "itgatesvc00000000000000000000001"  # stack_config/80-gate.yaml's gate-svc
BUSY_KEY = "itgatebusy0000000000000000000001"  # gate-busy's


def _rule(decision: dict[str, Any], name: str) -> dict[str, Any]:
    rule: dict[str, Any] = next(r for r in decision["rules"] if r["rule"] == name)
    return rule


async def _until_rule(
    api: httpx.AsyncClient, body: dict[str, Any], name: str, outcome: str, timeout: float = 30
) -> dict[str, Any]:
    """The decision once rule ``name`` says ``outcome`` (insight follows the topics, and
    keeps who is on call for 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await api.post("/deploy-gates/evaluate", json=body)
        assert reply.status_code == 200, reply.text
        decision: dict[str, Any] = reply.json()
        if _rule(decision, name)["outcome"] == outcome:
            return decision
        assert time.monotonic() < deadline, f"{name} not {outcome} after {timeout} s: {decision}"
        await asyncio.sleep(0.5)


async def _change(stack: Stack, change_id: str, status: str, environment: str) -> None:
    body = {
        "routing_key": BUSY_KEY,
        "payload": {
            "summary": f"Deploy gate-busy ({change_id})",
            "source": "argo-rollouts",
            "change_id": change_id,
            "kind": "deploy",
            "status": status,
            "version": "9.9",
            "environment": environment,
        },
    }
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(f"{stack.ingest_url}/v2/change/enqueue", json=body)
    assert reply.status_code == 202, reply.text


async def _evaluate(
    api: httpx.AsyncClient, service: str, version: str, change_id: str = ""
) -> dict[str, Any]:
    reply = await api.post(
        "/deploy-gates/evaluate",
        json={
            "service": service,
            "environment": "production",
            "version": version,
            "change_id": change_id,
        },
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _failing(decision: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in decision["rules"] if r["outcome"] == "fail"]


async def _until(
    api: httpx.AsyncClient, service: str, version: str, fragment: str, change_id: str = ""
) -> Any:
    """The decision once a failing rule's reason has ``fragment`` (insight follows the event
    log: a moment behind)."""
    deadline = time.monotonic() + 30
    while True:
        decision = await _evaluate(api, service, version, change_id)
        if any(fragment in r["reason"] for r in _failing(decision)):
            return decision
        assert time.monotonic() < deadline, f"no {fragment!r} after 30 s: {decision}"
        await asyncio.sleep(0.3)


async def _audit(stack: Stack, evaluation_id: str) -> list[Any]:
    deadline = time.monotonic() + 15
    async with stack.channel("escalation") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        while True:
            records = (
                await auth.ListAudit(
                    auth_service_pb2.ListAuditRequest(resource_id=evaluation_id, limit=100)
                )
            ).records
            if any(r.action == "gate.override" for r in records):
                return list(records)
            assert time.monotonic() < deadline, f"no override audited: {records}"
            await asyncio.sleep(0.3)


async def test_a_config_freeze_window_fails_the_gate_with_its_reason(stack: Stack) -> None:
    async with await user_client(stack, "gate-resp") as api:
        decision = await _evaluate(api, "gate-frozen", "1.0")
    assert decision["outcome"] == "fail" and decision["passed"] is False
    (rule,) = _failing(decision)
    assert rule["rule"] == "gate-freeze.freeze_window:always"
    assert "in freeze window 'always'" in rule["reason"] and "release train" in rule["reason"]
    assert decision["evaluation_id"].startswith("gate-") and decision["valid_until"]


async def test_an_open_incident_fails_it_until_a_manager_overrides(stack: Stack) -> None:
    version = f"2.{uuid.uuid4().hex[:6]}"
    change = f"deploy-{uuid.uuid4().hex[:8]}"
    async with await user_client(stack, "gate-resp") as api:
        title = await trigger(stack, f"gate test {uuid.uuid4().hex[:8]}", key=KEY)
        incident = await incident_titled(api, title, "gate-svc")
        reason = f"incident {incident['id']} (urgency high) is open on the service"
        failed = await _until(api, "gate-svc", version, reason, change)
        assert failed["outcome"] == "fail"
        (rule,) = _failing(failed)
        assert rule["rule"] == "gate-prod.open_incidents"
        # A responder may not override.
        refused = await api.post(
            "/deploy-gates/overrides",
            json={"evaluation_id": failed["evaluation_id"], "reason": "hotfix"},
        )
        assert_problem(refused, 403)
    async with await user_client(stack, "gate-mgr") as api:
        assert_problem(
            await api.post(
                "/deploy-gates/overrides", json={"evaluation_id": failed["evaluation_id"]}
            ),
            400,
            "reason",
        )
        overridden = await api.post(
            "/deploy-gates/overrides",
            json={"evaluation_id": failed["evaluation_id"], "reason": "hotfix for the outage"},
        )
        assert overridden.status_code == 201, overridden.text
        body = overridden.json()
        assert body["outcome"] == "pass" and body["evaluated_outcome"] == "fail"
        assert body["override"]["actor"] == "gate-mgr"
        # Later evaluations of that version pass (the rules still listed), others still fail.
        later = await _evaluate(api, "gate-svc", version)
        assert later["outcome"] == "pass" and later["override"]["actor"] == "gate-mgr"
        assert _failing(later) and (await _evaluate(api, "gate-svc", "other"))["outcome"] == "fail"
    # The failed decision and the override are on the change's timeline.
    async with await user_client(stack, "gate-resp") as api:
        reply = await api.get(f"/changes/{change}/timeline")
        assert reply.status_code == 200, reply.text
        entries = reply.json()["entries"]
        mine = [e for e in entries if e["evaluation_id"] == failed["evaluation_id"]]
        assert [(e["kind"], e["actor"], e["outcome"]) for e in mine] == [
            ("gate_decision", "gate-resp", "fail"),
            ("gate_override", "gate-mgr", "pass"),
        ]
        assert reason in mine[0]["summary"]
        assert "hotfix for the outage" in mine[1]["summary"]
    records = await _audit(stack, failed["evaluation_id"])
    override = next(r for r in records if r.action == "gate.override")
    assert override.actor == "gate-mgr" and override.allowed and override.service == "insight"
    assert "hotfix for the outage" in override.reason
    async with await user_client(stack, "gate-resp") as api:
        resolved = await api.post(f"/incidents/{incident['id']}/resolve")
        assert resolved.status_code == 202, resolved.text
        await until_status(api, incident["id"], "resolved")


async def test_an_adhoc_freeze_fails_the_gate_until_deleted(stack: Stack) -> None:
    version = f"3.{uuid.uuid4().hex[:6]}"
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with await user_client(stack, "gate-resp") as api:
        refused = await api.post(
            "/deploy-gates/freezes",
            json={"ends_at": ends, "reason": "no", "services": ["gate-svc"]},
        )
        assert_problem(refused, 403)
    async with await user_client(stack, "gate-mgr") as api:
        assert_problem(
            await api.post(
                "/deploy-gates/freezes",
                json={"ends_at": "2020-01-01T00:00:00Z", "reason": "x", "services": ["gate-svc"]},
            ),
            400,
            "ends_at",
        )
        created = await api.post(
            "/deploy-gates/freezes",
            json={"ends_at": ends, "reason": "Black Friday", "services": ["gate-svc"]},
        )
        assert created.status_code == 201, created.text
        freeze = created.json()
        assert freeze["author"] == "gate-mgr"
        listed = (await api.get("/deploy-gates/freezes")).json()["freezes"]
        assert freeze["id"] in [f["id"] for f in listed]
        decision = await _evaluate(api, "gate-svc", version)
        assert decision["outcome"] == "fail"
        rule = next(r for r in _failing(decision) if r["rule"] == f"adhoc_freeze:{freeze['id']}")
        assert "frozen by gate-mgr" in rule["reason"] and "Black Friday" in rule["reason"]
        deleted = await api.delete(f"/deploy-gates/freezes/{freeze['id']}")
        assert deleted.status_code == 204, deleted.text
        after = await _evaluate(api, "gate-svc", version)
        assert not any(r["rule"].startswith("adhoc_freeze:") for r in after["rules"])


async def test_the_on_call_rule_fails_while_nobody_is_on_call_then_passes(stack: Stack) -> None:
    body = {"service": "gate-oncall", "environment": "production", "version": "1.0"}
    async with await user_client(stack, "gate-resp") as api:
        nobody = await _until_rule(api, body, "gate-oncall.on_call", "fail")
        assert nobody["outcome"] == "fail"
        assert _rule(nobody, "gate-oncall.on_call")["reason"] == (
            "nobody is on call for 'gate-oncall'"
        )
    now = datetime.now(UTC)
    async with await user_client(stack, "gate-mgr") as api:
        made = await api.post(
            "/schedules/gate-empty-rota/overrides",
            json={
                "user_id": "gate-resp",
                "start": (now - timedelta(minutes=1)).isoformat(),
                "end": (now + timedelta(hours=1)).isoformat(),
            },
        )
        assert made.status_code == 201, made.text
        # insight asks escalation again once its 10 s answer is old.
        someone = await _until_rule(api, body, "gate-oncall.on_call", "pass")
    reason = _rule(someone, "gate-oncall.on_call")["reason"]
    # gate-resp (UTC) is awake, or asleep with all_asleep: off: either way named.
    assert "gate-resp" in reason, reason
    assert someone["outcome"] == "pass"
    async with await user_client(stack, "gate-mgr") as api:
        deleted = await api.delete(f"/schedules/gate-empty-rota/overrides/{made.json()['id']}")
        assert deleted.status_code == 204, deleted.text


async def test_changes_in_flight_fail_it_until_the_other_change_succeeded_and_show_on_its_timeline(
    stack: Stack,
) -> None:
    other, mine = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4().hex[:8]}"
    env = f"prod-{uuid.uuid4().hex[:6]}"  # only changes to this environment count
    body = {"service": "gate-busy", "environment": env, "version": "10.0", "change_id": mine}
    await _change(stack, other, "started", env)
    async with await user_client(stack, "gate-resp") as api:
        busy = await _until_rule(api, body, "gate-busy.changes_in_flight", "fail")
        assert busy["outcome"] == "fail" and busy["change_id"] == mine
        reason = _rule(busy, "gate-busy.changes_in_flight")["reason"]
        assert reason.startswith(f"another change is in flight: {other} (started "), reason
        # The request's own change, once started, is not "another" change.
        await _change(stack, mine, "started", env)
        await _change(stack, other, "succeeded", env)
        free = await _until_rule(api, body, "gate-busy.changes_in_flight", "pass")
        assert free["outcome"] == "pass"
        assert _rule(free, "gate-busy.changes_in_flight")["reason"] == "no other change in flight"
        # Both decisions are on my change's timeline, with who asked and what they said;
        # the other change's timeline has its events.
        reply = await api.get(f"/changes/{mine}/timeline")
        assert reply.status_code == 200, reply.text
        history = reply.json()
        assert history["service"] == "gate-busy"
        decisions = [e for e in history["entries"] if e["kind"] == "gate_decision"]
        by_id = {e["evaluation_id"]: e for e in decisions}
        assert by_id[busy["evaluation_id"]]["outcome"] == "fail"
        assert by_id[busy["evaluation_id"]]["actor"] == "gate-resp"
        assert other in by_id[busy["evaluation_id"]]["summary"]
        assert by_id[free["evaluation_id"]]["outcome"] == "pass"
        assert by_id[free["evaluation_id"]]["summary"].endswith("every rule passed")
        assert [e["status"] for e in history["entries"] if e["kind"] == "change_event"] == [
            "started"
        ]
        theirs = (await api.get(f"/changes/{other}/timeline")).json()
        assert [(e["kind"], e["status"]) for e in theirs["entries"]] == [
            ("change_event", "started"),
            ("change_event", "succeeded"),
        ]
        assert_problem(await api.get("/changes/no-such-change/timeline"), 404)
    async with await user_client(stack, "api-viewer") as outsider:
        assert_problem(await outsider.get(f"/changes/{mine}/timeline"), 404)
