"""The automation dry run over insight's store, through insight (gRPC), the api (REST) and
the CLI, on real PostgreSQL and Kafka; and change failure read from the change lifecycle
(stack_config/86-automation-dry-run.yaml).

The incidents and changes are written straight onto the topics at a random moment months in
the past, so the window a test asks about holds only its own (a rerun on the same Kafka and
PostgreSQL picks another moment)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from tocsin.v1 import alert_pb2, incident_pb2, insight_service_pb2
from tocsin_common.transport import PostgresConnection
from tocsin_insight.automation_dry_run import NotReady, check_generation

from tests.integration.api_client import client, user_client
from tests.integration.harness import Stack
from tests.integration.test_cli import api_env, tocsin
from tests.integration.test_insight_stories import eventually, insight

pytestmark = pytest.mark.integration

E = incident_pb2
SERVICE = "dry-svc"


def _moment() -> datetime:
    """A random minute 100 to 300 days ago: the test's own window."""
    minutes = int.from_bytes(os.urandom(3)) % (200 * 24 * 60)
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=100, minutes=minutes)


def _event(
    incident_id: str,
    n: int,
    kind: int,
    at: datetime,
    created: datetime,
    labels: dict[str, str],
    *,
    message: str = "",
    suppressed: bool = False,
) -> incident_pb2.IncidentEvent:
    e = E.IncidentEvent(event_id=f"{incident_id}-{n}", type=kind, actor="source", message=message)  # type: ignore[arg-type]
    e.at.FromDatetime(at)
    i = e.incident
    i.incident_id = incident_id
    i.service_id = SERVICE
    i.title = f"dry run {incident_id}"
    i.urgency = E.URGENCY_HIGH
    i.severity = alert_pb2.SEVERITY_CRITICAL
    i.suppressed = suppressed
    i.created_at.FromDatetime(created)
    i.labels.update(labels)
    if kind == E.INCIDENT_EVENT_TYPE_RESOLVED:
        i.status = E.INCIDENT_STATUS_RESOLVED
    e.alert.source = "dry-run-tests"
    return e


async def _send(stack: Stack, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _history(stack: Stack, t0: datetime) -> dict[str, str]:
    """Four incidents from t0: A (OOM: triggered, level 1, level 2, acknowledged, resolved),
    B (another alert), C (OOM, suppressed), D (OOM: triggered, level 2 twice, still open)."""
    run = os.urandom(3).hex()
    ids = {name: f"dry-{run}-{name}" for name in "ABCD"}
    oom = {"alertname": "OOMKilled", "pod": "checkout-1"}
    disk = {"alertname": "DiskFull"}
    T, ESC = E.INCIDENT_EVENT_TYPE_TRIGGERED, E.INCIDENT_EVENT_TYPE_ESCALATED
    ACK, RES = E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, E.INCIDENT_EVENT_TYPE_RESOLVED
    level = "escalated to level {}: paged dry-resp"
    # (incident, kind, minutes after t0, created minutes after t0, labels, message, suppressed)
    plan = [
        ("A", T, 0, 0, oom, "", False),
        ("A", ESC, 0, 0, oom, level.format(1), False),
        ("A", ESC, 2, 0, oom, level.format(2), False),
        ("A", ACK, 3, 0, oom, "", False),
        ("A", RES, 10, 0, oom, "", False),
        ("B", T, 1, 1, disk, "", False),
        ("B", RES, 5, 1, disk, "", False),
        ("C", T, 1, 1, oom, "", True),
        ("C", RES, 4, 1, oom, "", True),
        ("D", T, 20, 20, oom, "", False),
        ("D", ESC, 22, 20, oom, level.format(2), False),
        ("D", ESC, 30, 20, oom, level.format("2 (repeat 1)"), False),
    ]
    records = []
    for n, (name, kind, minutes, created, labels, message, hushed) in enumerate(plan):
        at, opened = t0 + timedelta(minutes=minutes), t0 + timedelta(minutes=created)
        e = _event(ids[name], n, kind, at, opened, labels, message=message, suppressed=hushed)
        topic = "incidents.timeline" if kind == ESC else "incidents.events"
        records.append((topic, ids[name].encode(), e.SerializeToString()))
    await _send(stack, records)
    return ids


def _request(t0: datetime, **fields: str) -> insight_service_pb2.AutomationDryRunRequest:
    request = insight_service_pb2.AutomationDryRunRequest(**fields)
    request.since.FromDatetime(t0 - timedelta(minutes=1))
    request.until.FromDatetime(t0 + timedelta(hours=1))
    return request


async def test_a_rule_would_have_fired_as_the_live_path_decides(
    stack: Stack, tmp_path: Path
) -> None:
    t0 = _moment()
    ids = await _history(stack, t0)
    stub = insight(stack)

    async def counted() -> insight_service_pb2.AutomationDryRunResponse | None:
        reply = await stub.AutomationDryRun(_request(t0, rule_id="dry-oom"))
        return reply if reply.fires == 5 and reply.incidents_read == 4 else None

    reply = await eventually(counted, "the dry run over the four incidents")
    # A: triggered, level 2, resolved; D: triggered, level 2 once (a repeat is one firing);
    # B's alert is another, C was suppressed.
    assert reply.rule_id == "dry-oom" and reply.incidents == 2
    assert dict(reply.by_trigger) == {"triggered": 2, "level 2": 2, "resolved": 1}
    assert list(reply.sample) == [ids["A"], ids["D"]]
    assert reply.summary == "rule 'dry-oom' would have fired 5 times in 1 hour"
    assert reply.definition_version.startswith("g")
    # A label's equality is ruled out in the database: B (DiskFull) is not even read.
    exact = {
        "id": "oom-exact",
        "matchers": ['service="dry-svc"', 'alertname="OOMKilled"'],
        "on": ["triggered"],
        "action": {"type": "incident", "command": "resolve"},
    }
    reply = await stub.AutomationDryRun(_request(t0, rule_json=json.dumps(exact)))
    assert (reply.fires, reply.incidents_read, list(reply.sample)) == (2, 3, [ids["A"], ids["D"]])

    # A rule written as in the config, through the REST API by the team's manager.
    adhoc = {
        "id": "ack-pods",
        "matchers": ['service="dry-svc"', 'pod=~"checkout-.*"'],
        "on": ["acknowledged", "level 1"],
        "action": {"type": "incident", "command": "resolve"},
    }
    window = {
        "since": (t0 - timedelta(minutes=1)).isoformat(),
        "until": (t0 + timedelta(hours=1)).isoformat(),
    }
    async with await user_client(stack, "dry-mgr") as api:
        answer = await api.post("/automation/dry-run", json={"rule": adhoc, **window})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["fires"], body["by_trigger"]) == (2, {"acknowledged": 1, "level 1": 1})
        assert body["sample"] == [ids["A"]] and body["incidents_read"] == 4
        bad = await api.post(
            "/automation/dry-run", json={"rule": {**adhoc, "on": ["level 0"]}, **window}
        )
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "rule.on.0"
        gone = await api.post("/automation/dry-run", json={"rule_id": "nope", **window})
        assert gone.status_code == 404, gone.text
        # A rule that could match incidents of a service no team owns is for admins.
        wider = {**adhoc, "matchers": ['service=~"dry-svc|checkout"']}
        refused = await api.post("/automation/dry-run", json={"rule": wider, **window})
        assert refused.status_code == 403, refused.text
        assert "which no team owns, needs admin" in refused.json()["detail"]
    # A responder of the team may not; nor may anyone without a credential.
    async with await user_client(stack, "dry-resp") as api:
        denied = await api.post("/automation/dry-run", json={"rule_id": "dry-oom", **window})
        assert denied.status_code == 403, denied.text
        assert "automation.dry_run needs manager" in denied.json()["detail"]
    async with client(stack, "") as api:
        assert (
            await api.post("/automation/dry-run", json={"rule_id": "dry-oom"})
        ).status_code == 401
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AutomationDryRun(
            insight_service_pb2.AutomationDryRunRequest(rule_id="dry-oom", rule_json="{}")
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The CLI, by the manager, as JSON and as a table.
    token, _ = await stack.token_for("dry-mgr")
    env = api_env(stack, token, tmp_path)
    since = (t0 - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (t0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = await tocsin(
        "automation",
        "dry-run",
        "dry-oom",
        "--since",
        since,
        "--until",
        until,
        "-o",
        "json",
        env=env,
    )
    assert run.code == 0, run.stderr
    assert (run.json()["fires"], run.json()["sample"]) == (5, [ids["A"], ids["D"]])
    rule_file = tmp_path / "rule.yaml"
    rule_file.write_text(json.dumps(adhoc))
    table = await tocsin(
        "automation",
        "dry-run",
        "--file",
        str(rule_file),
        "--since",
        since,
        "--until",
        until,
        env=env,
    )
    assert table.code == 0, table.stderr
    assert table.stdout.startswith("rule 'ack-pods' would have fired 2 times in 1 hour")
    both = await tocsin("automation", "dry-run", "dry-oom", "--file", str(rule_file), env=env)
    assert both.code == 2 and "not both" in both.stderr


def _change(event_id: str, at: datetime, **fields: str | int) -> tuple[str, bytes, bytes]:
    change = alert_pb2.ChangeEvent(
        event_id=event_id,
        service_id=SERVICE,
        summary=f"change {event_id}",
        **fields,  # type: ignore[arg-type]
    )
    change.timestamp.FromDatetime(at)
    return ("changes", SERVICE.encode(), change.SerializeToString())


async def test_change_failure_reads_the_change_lifecycle(stack: Stack) -> None:
    """deploy-1 started and succeeded, then rolled back (rollback started and succeeded)
    with no incident; deploy-2 failed with no incident and deploy-3 fixed it forward; an
    incident 57 min after deploy-3 ended (and over an hour after the others ended) fails
    deploy-3 alone, resolved 10 min later. Three changes (not eight events; the rollback is
    not one), all three failed. deploy-0, begun before the window, is not one of them."""
    t1 = _moment()
    run = os.urandom(3).hex()
    minute = timedelta(minutes=1)
    d1, rb, d2, d3 = (f"{run}-{n}" for n in ("deploy-1", "rollback-1", "deploy-2", "deploy-3"))
    deploy, rollback = alert_pb2.CHANGE_KIND_DEPLOY, alert_pb2.CHANGE_KIND_ROLLBACK
    started, succeeded = alert_pb2.CHANGE_STATUS_STARTED, alert_pb2.CHANGE_STATUS_SUCCEEDED
    failed = alert_pb2.CHANGE_STATUS_FAILED

    def change(change_id: str, minutes: int, kind: int, status: int, rollback_of: str = "") -> Any:
        return _change(
            f"{change_id}-{minutes}",
            t1 + timedelta(minutes=minutes),
            change_id=change_id,
            kind=kind,
            status=status,
            rollback_of=rollback_of,
            environment="prod",
        )

    d0 = f"{run}-deploy-0"
    records = [
        # began before the window (since is t1 - 1 min), failed inside it: not the window's
        change(d0, -10, deploy, started),
        change(d0, 2, deploy, failed),
        change(d1, 0, deploy, started),
        change(d1, 5, deploy, succeeded),
        change(rb, 8, rollback, started, rollback_of=d1),
        change(rb, 9, rollback, succeeded, rollback_of=d1),
        change(d2, 10, deploy, started),
        change(d2, 12, deploy, failed),
        change(d3, 15, deploy, started),
        change(d3, 18, deploy, succeeded),
    ]
    incident_id = f"dry-{run}-chg"
    created = t1 + 75 * minute
    for n, (kind, at) in enumerate(
        (
            (E.INCIDENT_EVENT_TYPE_TRIGGERED, created),
            (E.INCIDENT_EVENT_TYPE_RESOLVED, created + 10 * minute),
        )
    ):
        e = _event(incident_id, n, kind, at, created, {"alertname": "Slow"})
        records.append(("incidents.events", incident_id.encode(), e.SerializeToString()))
    await _send(stack, records)
    window = insight_service_pb2.InsightFilter(service_id=SERVICE)
    window.since.FromDatetime(t1 - minute)
    window.until.FromDatetime(t1 + timedelta(hours=1))
    stub = insight(stack)

    async def complete() -> insight_service_pb2.ChangeFailure | None:
        reply = await stub.Overview(insight_service_pb2.OverviewRequest(filter=window))
        cf = reply.change_failure
        return cf if cf.total_changes == 3 and cf.recovery_seconds.count == 3 else None

    cf = await eventually(complete, "the change failure of the three changes")
    assert (cf.failed_changes, cf.change_failure_rate, cf.unrecovered) == (3, 1.0, 0)
    # deploy-1: rollback started 8 min -> succeeded 9 min: 60 s; deploy-2: failed at 12 min
    # -> deploy-3 succeeded at 18 min: 360 s; deploy-3: incident 75 min -> resolved 85: 600 s.
    r = cf.recovery_seconds
    assert (r.p50, r.max, r.mean) == (pytest.approx(360), pytest.approx(600), pytest.approx(340))


async def test_a_generation_without_labels_is_refused_until_the_replay_serves(
    stack: Stack,
) -> None:
    """A build of definitions v4 answers from a v3 generation while it replays into its
    own: that one's facts hold no labels, and the dry run says so rather than count wrong."""
    pg = PostgresConnection.from_env()
    name = f"g{900_000 + int.from_bytes(os.urandom(2))}"
    async with await psycopg.AsyncConnection.connect(
        pg.url, autocommit=True, **pg.client_options()
    ) as conn:
        await conn.execute(
            "INSERT INTO insight_generations (name, definition) VALUES (%s, 3)", (name,)
        )
        try:
            with pytest.raises(NotReady, match=f"generation {name} holds facts of definitions v3"):
                await check_generation(conn, name)
        finally:
            await conn.execute("DELETE FROM insight_generations WHERE name = %s", (name,))
