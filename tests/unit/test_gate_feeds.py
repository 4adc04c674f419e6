"""The deploy gate's live inputs in insight: who is on call (escalation's WhoIsOnCall,
cached briefly), changes in flight from change facts, and a change's timeline (pure parts
and the cache; the live stack: tests/integration/test_deploy_gate.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tocsin.v1 import oncall_service_pb2
from tocsin_common.change.gate import GateRequest, GateRules, OnCallPerson, evaluate
from tocsin_common.config.loader import parse_config
from tocsin_insight.change_timeline import timeline
from tocsin_insight.gate_state import changes_in_flight_of, state_of
from tocsin_insight.oncall_source import OnCallSource, OnCallUnknown, people_of

NOW = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)
CONFIG = parse_config(
    """
version: 1
escalation_policies:
  - id: ep
    name: EP
    levels:
      - {delay: 5m, targets: [{type: user, id: rita}, {type: user, id: bo}]}
      - {delay: 5m, targets: [{type: user, id: max}]}
users:
  - {id: rita, name: Rita, email: rita@example.com, time_zone: Europe/Berlin}
  - {id: bo, name: Bo, email: bo@example.com}
  - {id: max, name: Max, email: max@example.com}
services:
  - {id: web, name: Web, escalation_policy: ep}
change_control:
  gates:
    - id: prod
      environments: [production]
      on_call: {}
      changes_in_flight: {stale_after: 1h}
"""
)


def answer(*entries: tuple[str, int]) -> oncall_service_pb2.WhoIsOnCallResponse:
    return oncall_service_pb2.WhoIsOnCallResponse(
        entries=[
            oncall_service_pb2.OnCallEntry(user_id=u, escalation_level=level)
            for u, level in entries
        ]
    )


def test_on_call_is_the_first_level_once_each_with_their_zones() -> None:
    people = people_of(CONFIG, answer(("rita", 1), ("max", 2), ("bo", 1), ("rita", 1)))
    assert people == (OnCallPerson("bo", "UTC"), OnCallPerson("rita", "Europe/Berlin"))
    assert people_of(CONFIG, answer(("max", 2))) == ()


class Escalation:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.reply = answer(("rita", 1))
        self.error: grpc.aio.AioRpcError | None = None

    async def __call__(self, policy: str) -> oncall_service_pb2.WhoIsOnCallResponse:
        self.asked.append(policy)
        if self.error is not None:
            raise self.error
        return self.reply


async def test_who_is_on_call_is_asked_per_policy_and_kept_briefly() -> None:
    escalation = Escalation()
    now = [100.0]
    source = OnCallSource(escalation, ttl=10, clock=lambda: now[0])
    assert [p.user_id for p in await source.on_call(CONFIG, "web")] == ["rita"]
    escalation.reply = answer()
    now[0] += 9.9
    assert [p.user_id for p in await source.on_call(CONFIG, "web")] == ["rita"]
    assert escalation.asked == ["ep"]
    now[0] += 0.1
    assert await source.on_call(CONFIG, "web") == ()
    assert escalation.asked == ["ep", "ep"]


async def test_an_escalation_error_is_unknown_not_nobody() -> None:
    escalation = Escalation()
    escalation.error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connect failed"
    )
    source = OnCallSource(escalation)
    with pytest.raises(OnCallUnknown, match="UNAVAILABLE: connect failed"):
        await source.on_call(CONFIG, "web")
    with pytest.raises(OnCallUnknown, match="'nope' is not in the configuration"):
        await source.on_call(CONFIG, "nope")


def row(
    event_id: str,
    change_id: str,
    status: str,
    minutes_ago: float,
    environment: str = "production",
    kind: str = "deploy",
    rollback_of: str = "",
) -> tuple[object, ...]:
    at = NOW - timedelta(minutes=minutes_ago)
    return (event_id, "web", at, change_id, kind, status, "1.0", rollback_of, environment, "")


def test_changes_in_flight_are_folded_from_the_facts_in_any_order() -> None:
    rows = [
        row("e2", "c-1", "succeeded", 5),
        row("e1", "c-1", "started", 20),
        row("e3", "c-2", "started", 10),
        row("e4", "c-3", "started", 300),  # beyond the window
        row("e5", "", "unspecified", 1),  # a point-in-time change: never in flight
    ]
    found = changes_in_flight_of(rows, NOW, timedelta(hours=2))
    assert [(c.change_id, c.started_at) for c in found] == [("c-2", NOW - timedelta(minutes=10))]


def test_the_gate_fails_on_another_change_and_nobody_on_call_from_the_feeds() -> None:
    request = GateRequest("web", "production", "2.0", change_id="c-9")
    rules = GateRules.for_request(CONFIG.change_control, request)
    changes = changes_in_flight_of([row("e3", "c-2", "started", 10)], NOW, timedelta(hours=2))
    state = state_of(CONFIG, "web", [], {}, [], [], on_call=(), changes=changes)
    found = {r.rule: r for r in evaluate(request, state, rules, NOW).results}
    assert found["prod.on_call"].outcome == "fail"
    assert found["prod.changes_in_flight"].outcome == "fail"
    assert "c-2 (started 2026-03-25T11:50:00Z)" in found["prod.changes_in_flight"].reason
    awake = (OnCallPerson("bo", "UTC"),)
    state = state_of(CONFIG, "web", [], {}, [], [], on_call=awake, changes=())
    assert evaluate(request, state, rules, NOW).outcome == "pass"


def test_a_changes_timeline_has_its_events_its_rollback_and_the_gates_decisions() -> None:
    t = NOW - timedelta(minutes=30)
    changes = [
        (row("e1", "c-1", "started", 20), "argo"),
        (row("e2", "c-1", "failed", 10), "argo"),
        (row("e3", "c-2", "succeeded", 5, kind="rollback", rollback_of="c-1"), "argo"),
    ]
    where = ("production", "1.0", "web")
    decisions = [
        ("gate-a", t, "rita", "fail", "fail", False, "prod.on_call: nobody", *where),
        ("gate-b", t + timedelta(minutes=1), "ci", "pass", "fail", False, "x", *where),
    ]
    overrides = [("gate-a", t + timedelta(seconds=30), "max", "hotfix", "fail", NOW, *where)]
    entries = timeline("c-1", changes, decisions, overrides)
    assert [(e.kind, e.actor) for e in entries] == [
        ("gate_decision", "rita"),
        ("gate_override", "max"),
        ("gate_decision", "ci"),
        ("change_event", "argo"),
        ("change_event", "argo"),
        ("change_event", "argo"),
    ]
    assert entries[0].summary == "deploy gate: fail for production 1.0: prod.on_call: nobody"
    assert "overridden (fail -> pass)" in entries[1].summary and "hotfix" in entries[1].summary
    assert "the rules said fail; overridden" in entries[2].summary
    assert [e.summary for e in entries[3:]] == [
        "deploy started",
        "deploy failed",
        "rollback c-2 (succeeded) of this change",
    ]
