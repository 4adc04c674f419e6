"""insight against the whole stack (stack_config/70-insight.yaml): incidents driven through
ingest, correlation, escalation and notification show up in InsightService with the right
figures; a SIGKILLed insight resumes exactly once; a bad record is dead-lettered while the
rest flows; a replay fills a new generation that then serves the same figures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import grpc
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tocsin.v1 import (
    alert_pb2,
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    insight_service_pb2,
    insight_service_pb2_grpc,
    notification_pb2,
)
from tocsin_common.transport import PostgresConnection
from tocsin_insight.domain.interruptions import hour_class

from tests.integration.harness import ROOT, Stack

pytestmark = pytest.mark.integration

E = incident_pb2
KEY = "insight0000000000000000000000001"


_CHANNELS: dict[str | None, grpc.aio.Channel] = {}


def insight(stack: Stack, token: str | None = None) -> insight_service_pb2_grpc.InsightServiceStub:
    """A stub on a channel kept for the session (a stub alone does not keep it open)."""
    if token not in _CHANNELS:
        _CHANNELS[token] = stack.channel("insight", token=token)
    return insight_service_pb2_grpc.InsightServiceStub(_CHANNELS[token])


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


async def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    pg = PostgresConnection.from_env()
    async with await psycopg.AsyncConnection.connect(
        pg.url, autocommit=True, **pg.client_options()
    ) as conn:
        cur = await conn.execute(query.encode(), params or None)
        return [tuple(r) for r in await cur.fetchall()]


async def serving() -> str:
    return str((await sql("SELECT generation FROM insight_serving"))[0][0])


async def test_an_incident_acknowledged_after_a_known_delay_and_escalated_once(
    stack: Stack,
) -> None:
    title = f"insight story {os.urandom(4).hex()}"
    body = {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": title,
        "payload": {"summary": title, "source": "insight-tests", "severity": "error"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response,
    ):
        assert response.status == 202, await response.text()
    admin_channel = stack.channel("escalation")
    incidents = incident_service_pb2_grpc.IncidentServiceStub(admin_channel)

    async def opened() -> incident_pb2.Incident | None:
        listed = await incidents.List(incident_service_pb2.ListIncidentsRequest())
        return next((i for i in listed.incidents if i.title == title), None)

    incident = await eventually(opened, "the incident opened")
    created = incident.created_at.ToDatetime(tzinfo=UTC)
    # Level 2 (ins-bob) is paged 2 s after level 1 (ins-ana): ana acknowledges after 3 s.
    await asyncio.sleep(max(0.0, 3.0 - (datetime.now(UTC) - created).total_seconds()))
    ana, _ = await stack.token_for("ins-ana")
    ana_channel = stack.channel("escalation", ana)
    as_ana = incident_service_pb2_grpc.IncidentServiceStub(ana_channel)
    before = datetime.now(UTC)
    await as_ana.Acknowledge(incident_service_pb2.IncidentRef(incident_id=incident.incident_id))
    after = datetime.now(UTC)
    await asyncio.sleep(1.0)
    await as_ana.Resolve(incident_service_pb2.IncidentRef(incident_id=incident.incident_id))

    # This incident alone (a rerun on the same Kafka and Postgres finds the earlier ones).
    only = insight_service_pb2.InsightFilter(service_id="ins-ladder")
    only.since.FromDatetime(created)
    only.until.FromDatetime(created + timedelta(seconds=1))
    request = insight_service_pb2.ReportRequest(
        filter=only, group_by=["service", "person", "priority"]
    )

    async def reported() -> insight_service_pb2.ReportRow | None:
        reply = await insight(stack).Report(request)
        rows = [r for r in reply.rows if r.seconds_to_resolve.count >= 1]
        return rows[0] if rows and rows[0].total_notifications >= 2 else None

    row = await eventually(reported, "the incident in the report")
    assert dict(row.group) == {"service": "ins-ladder", "person": "ins-ana", "priority": "P2"}
    assert row.total_incident_count == 1
    ack = row.seconds_to_first_ack
    assert ack.count == 1
    low = (before - created).total_seconds() - 0.5
    high = (after - created).total_seconds() + 1.0
    assert low <= ack.p50 <= high and ack.mean == ack.p50 == ack.p95 == ack.max
    assert row.seconds_to_engage.count == 0  # one person engaged: engage needs two
    assert row.seconds_to_resolve.p50 >= ack.p50 + 0.9
    assert row.escalation_rate == 1.0 and row.total_escalations == 2
    assert row.auto_resolved_share == 0.0 and row.alerts_per_incident == 1.0
    assert row.total_notifications == 2  # ana, then bob
    # By week in a zone: the same incident, one row.
    in_paris = insight_service_pb2.InsightFilter()
    in_paris.CopyFrom(only)
    in_paris.time_zone = "Europe/Paris"
    weekly = await insight(stack).Report(
        insight_service_pb2.ReportRequest(filter=in_paris, period="week")
    )
    assert [r.total_incident_count for r in weekly.rows] == [1]
    local = created.astimezone(ZoneInfo("Europe/Paris"))
    monday = (local - timedelta(days=local.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert weekly.rows[0].period_start.ToDatetime(tzinfo=UTC) == monday.astimezone(UTC)
    series = await insight(stack).Timeseries(
        insight_service_pb2.TimeseriesRequest(filter=only, metric="seconds_to_first_ack")
    )
    assert [(p.count, p.value) for p in series.points] == [(1, ack.p50)]
    # P2's ack target is 2 s (24x7): acknowledged after 3 s, the ack clock breached; the
    # resolve target (1 h) was met.
    found = await insight(stack).Breaches(insight_service_pb2.BreachesRequest(filter=only))
    assert [(b.incident_id, b.kind, b.priority) for b in found.breaches] == [
        (incident.incident_id, "ack", "P2")
    ]
    assert found.breaches[0].target_seconds == 2.0
    assert found.breaches[0].business_seconds == pytest.approx(ack.p50)
    assert found.ack_within_target_rate == 0.0 and found.resolve_within_target_rate == 1.0
    draft = await insight(stack).ReviewDraft(
        insight_service_pb2.ReviewDraftRequest(incident_id=incident.incident_id)
    )
    assert "# Post-incident review" in draft.markdown and "ins-ana" in draft.markdown
    assert incident.incident_id in draft.markdown


async def test_a_team_viewer_reads_its_team_and_only_managers_of_every_team_read_across(
    stack: Stack,
) -> None:
    viewer, _ = await stack.token_for("ins-viewer")
    manager, _ = await stack.token_for("ins-mgr")
    mine = insight_service_pb2.ReportRequest(
        filter=insight_service_pb2.InsightFilter(team_id="ins-team")
    )
    await insight(stack, viewer).Report(mine)
    await insight(stack, viewer).Report(
        insight_service_pb2.ReportRequest(
            filter=insight_service_pb2.InsightFilter(service_id="ins-ladder")
        )
    )
    other = insight_service_pb2.ReportRequest(
        filter=insight_service_pb2.InsightFilter(team_id="auth-sre")
    )
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await insight(stack, viewer).Report(other)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    across = insight_service_pb2.ReportRequest(group_by=["team"])
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await insight(stack, manager).Report(across)  # manager of one team only
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "report.read" in (denied.value.details() or "")
    await insight(stack).Report(across)  # the admin
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await insight(stack, "").Report(mine)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await insight(stack).Report(
            insight_service_pb2.ReportRequest(group_by=["colour"], filter=mine.filter)
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "group_by[0]" in (bad.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await insight(stack).ReviewDraft(insight_service_pb2.ReviewDraftRequest(incident_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_incidents_that_keep_coming_back_open_a_problem(stack: Stack) -> None:
    service = f"ins-recur-{os.urandom(3).hex()}"
    events = synthetic_events(service, 3)
    for e in events:  # the first two share a fingerprint (group key), the third has its own
        e.incident.group_key = "disk-full" if not e.incident.incident_id.endswith("-2") else "cpu"
    await produce(stack, [(e.incident.incident_id.encode(), e.SerializeToString()) for e in events])
    request = insight_service_pb2.ProblemsRequest(
        filter=insight_service_pb2.InsightFilter(service_id=service)
    )

    async def opened() -> insight_service_pb2.ProblemsResponse | None:
        reply = await insight(stack).Problems(request)
        return reply if reply.problems else None

    reply = await eventually(opened, "the problem")
    assert [(p.fingerprint, p.incident_count, list(p.incident_ids)) for p in reply.problems] == [
        ("disk-full", 2, [f"{service}-0", f"{service}-1"])
    ]


# --- exactly once ------------------------------------------------------------------------------


def synthetic_events(service: str, incidents: int) -> list[incident_pb2.IncidentEvent]:
    """Each incident: triggered, escalated, acknowledged after (i % 50) + 1 s, resolved."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    out: list[incident_pb2.IncidentEvent] = []
    for i in range(incidents):
        incident_id = f"{service}-{i}"
        created = t0 + timedelta(milliseconds=i)
        steps = (
            (E.INCIDENT_EVENT_TYPE_TRIGGERED, 0.0, "source", ""),
            (E.INCIDENT_EVENT_TYPE_ESCALATED, 0.1, "system", "escalated to level 1: paged x"),
            (E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, (i % 50) + 1.0, "ins-ana", ""),
            (E.INCIDENT_EVENT_TYPE_RESOLVED, 100.0, "ins-ana", ""),
        )
        for kind, seconds, actor, message in steps:
            e = incident_pb2.IncidentEvent(
                event_id=str(uuid.uuid4()), type=kind, actor=actor, message=message
            )  # type: ignore[arg-type]
            e.at.FromDatetime(created + timedelta(seconds=seconds))
            e.incident.incident_id = incident_id
            e.incident.service_id = service
            e.incident.alert_count = 1
            e.incident.created_at.FromDatetime(created)
            out.append(e)
    return out


async def produce(stack: Stack, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send("incidents.events", key=key, value=value) for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_insight_killed_mid_batch_counts_every_event_exactly_once(stack: Stack) -> None:
    service = f"ins-load-{os.urandom(3).hex()}"
    events = synthetic_events(service, 3000)
    records = [(e.incident.incident_id.encode(), e.SerializeToString()) for e in events]
    # Some records twice, as a producer's retry after a lost acknowledgement sends them.
    records += records[:500]
    generation = await serving()
    count_sql = (
        f"SELECT count(*), coalesce(sum(event_count), 0) FROM insight_{generation}.incident_facts "
        "WHERE service_id = %s"
    )
    await produce(stack, records)

    async def partly() -> bool:
        ((rows, _),) = await sql(count_sql, service)
        return rows > 0

    await eventually(partly, "insight started on the records", timeout=60)
    stack.services["insight"].kill(signal.SIGKILL)  # mid-stream: some batches written, not all
    ((at_kill, _),) = await sql(count_sql, service)
    await stack.restart("insight")

    async def all_in() -> tuple[int, int] | None:
        ((rows, events_counted),) = await sql(count_sql, service)
        return (rows, events_counted) if rows == 3000 and events_counted == 12000 else None

    await eventually(all_in, "every incident once", timeout=120)
    await asyncio.sleep(2.0)  # nothing more arrives: no event counted twice later either
    ((rows, counted),) = await sql(count_sql, service)
    assert (rows, counted) == (3000, 12000), f"killed at {at_kill} incidents"
    expected_ack = sum((i % 50) + 1.0 for i in range(3000))
    ((ack_sum, escalations, stored_events),) = await sql(
        f"SELECT sum(extract(epoch FROM first_ack_at - created_at))::float8, "
        f"sum(escalation_count), (SELECT count(*) FROM insight_{generation}.incident_events e "
        f"WHERE e.incident_id LIKE %s) FROM insight_{generation}.incident_facts "
        "WHERE service_id = %s",
        f"{service}-%",
        service,
    )
    assert ack_sum == pytest.approx(expected_ack, abs=0.01)
    assert escalations == 3000 and stored_events == 12000
    # The report rollup, written in the same transactions, counts each incident once too.
    ((rolled, acks, rolled_ack_sum),) = await sql(
        f"SELECT sum(incidents), sum(cardinality(seconds_to_first_ack)), "
        f"(SELECT sum(v) FROM insight_{generation}.incident_rollup r2, "
        f"unnest(r2.seconds_to_first_ack) v WHERE r2.service_id = %s) "
        f"FROM insight_{generation}.incident_rollup WHERE service_id = %s",
        service,
        service,
    )
    assert (rolled, acks) == (3000, 3000)
    assert rolled_ack_sum == pytest.approx(expected_ack, abs=0.01)


async def test_a_bad_record_is_dead_lettered_with_its_bytes_and_the_rest_flows(
    stack: Stack,
) -> None:
    service = f"ins-bad-{os.urandom(3).hex()}"
    good = synthetic_events(service, 1)
    garbage = b"\xff\xfe not an incident event " + service.encode()
    await produce(
        stack,
        [(b"k", garbage)]
        + [(e.incident.incident_id.encode(), e.SerializeToString()) for e in good],
    )
    generation = await serving()

    async def flowed() -> bool:
        found = await sql(
            f"SELECT count(*) FROM insight_{generation}.incident_facts WHERE service_id = %s",
            service,
        )
        return found[0][0] == 1

    await eventually(flowed, "the good record after the bad one")
    kept = await sql("SELECT topic, reason FROM insight_dead_letters WHERE value = %s", garbage)
    assert len(kept) == 1 and kept[0][0] == "incidents.events" and "DecodeError" in kept[0][1]
    # And on incidents.deadletter, as every service dead-letters.
    consumer = AIOKafkaConsumer(
        "incidents.deadletter", bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        letters: list[alert_pb2.DeadLetter] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(d.original_value == garbage for d in letters):
            polled = await consumer.getmany(timeout_ms=500)
            for batch in polled.values():
                letters += [alert_pb2.DeadLetter.FromString(r.value) for r in batch if r.value]
        # escalation, which reads incidents.events too, dead-letters it as well
        mine = [d for d in letters if d.original_value == garbage and d.failed_service == "insight"]
        assert len(mine) == 1 and mine[0].source_topic == "incidents.events"
    finally:
        await consumer.stop()
    assert stack.services["insight"].proc is not None
    assert stack.services["insight"].proc.poll() is None  # still running


async def test_a_replay_fills_a_new_generation_that_then_serves_the_same_figures(
    stack: Stack,
) -> None:
    before_gen = await serving()
    request = insight_service_pb2.ReportRequest(
        filter=insight_service_pb2.InsightFilter(service_id="ins-ladder")
    )
    service = f"ins-replay-{os.urandom(3).hex()}"
    events = synthetic_events(service, 20)
    await produce(stack, [(e.incident.incident_id.encode(), e.SerializeToString()) for e in events])
    count_sql = "SELECT count(*) FROM insight_{}.incident_facts WHERE service_id = %s"

    async def landed() -> bool:
        return (await sql(count_sql.format(before_gen), service))[0][0] == 20

    await eventually(landed, "the incidents in the serving generation")
    before = await insight(stack).Report(request)
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tocsin_insight", "replay"],
        env=stack.services["insight"].env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    after_gen = await serving()
    assert after_gen != before_gen and f"generation {after_gen} complete" in replay.stdout
    assert (await sql(count_sql.format(after_gen), service))[0][0] == 20

    async def switched() -> insight_service_pb2.ReportResponse | None:
        reply = await insight(stack).Report(request)
        return reply if reply.definition_version == after_gen else None

    after = await eventually(switched, "the API on the new generation")
    assert [(r.total_incident_count, r.seconds_to_first_ack) for r in after.rows] == [
        (r.total_incident_count, r.seconds_to_first_ack) for r in before.rows
    ]
    # The live consumer follows the new generation: new records land there.
    more = synthetic_events(f"{service}-after", 3)
    await produce(stack, [(e.incident.incident_id.encode(), e.SerializeToString()) for e in more])

    async def followed() -> bool:
        return (await sql(count_sql.format(after_gen), f"{service}-after"))[0][0] == 3

    await eventually(followed, "new records in the new generation")


async def test_overview_availability_change_failure_interruptions_and_noise(stack: Stack) -> None:
    """One partial outage of 600 s on ins-ladder (SLO 99.9 %), a deploy 60 s before it, a
    page by SMS to ins-ana: over a 2-hour window, 300 impact seconds, one failed change
    recovered in 600 s, one interruption classed in ana's zone, the alert source counted."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(
        days=2, minutes=int.from_bytes(os.urandom(2)) % 600
    )
    incident_id = f"ins-ov-{os.urandom(3).hex()}"
    events = []
    for n, (kind, seconds, actor) in enumerate(
        (
            (E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, "source"),
            (E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 30, "ins-ana"),
            (E.INCIDENT_EVENT_TYPE_RESOLVED, 600, "ins-ana"),
        )
    ):
        e = incident_pb2.IncidentEvent(event_id=f"{incident_id}-{n}", type=kind, actor=actor)  # type: ignore[arg-type]
        e.at.FromDatetime(t0 + timedelta(seconds=seconds))
        e.incident.incident_id = incident_id
        e.incident.service_id = "ins-ladder"
        e.incident.alert_count = 2
        e.incident.labels["impact"] = "partial"
        e.incident.created_at.FromDatetime(t0)
        e.alert.source = f"src-{incident_id}"
        events.append(e)
    change = alert_pb2.ChangeEvent(
        event_id=f"chg-{incident_id}", service_id="ins-ladder", summary="deploy"
    )
    change.timestamp.FromDatetime(t0 - timedelta(seconds=60))
    page = notification_pb2.NotificationStatus(
        request_id=f"req-{incident_id}",
        incident_id=incident_id,
        user_id="ins-ana",
        channel="sms",
        outcome=notification_pb2.DELIVERY_OUTCOME_DELIVERED,
        attempt=1,
    )
    page.at.FromDatetime(t0 + timedelta(seconds=5))
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                "incidents.events", e.SerializeToString(), key=incident_id.encode()
            )
        await producer.send_and_wait("changes", change.SerializeToString(), key=b"ins-ladder")
        await producer.send_and_wait(
            "notifications.status", page.SerializeToString(), key=incident_id.encode()
        )
    finally:
        await producer.stop()
    window = insight_service_pb2.InsightFilter(service_id="ins-ladder")
    window.since.FromDatetime(t0 - timedelta(hours=1))
    window.until.FromDatetime(t0 + timedelta(hours=1))

    async def complete() -> insight_service_pb2.OverviewResponse | None:
        reply = await insight(stack).Overview(insight_service_pb2.OverviewRequest(filter=window))
        ready = (
            reply.change_failure.failed_changes == 1
            and reply.interruptions
            and reply.availability
            and reply.availability[0].impact_seconds > 0
        )
        return reply if ready else None

    reply = await eventually(complete, "the overview")
    (avail,) = reply.availability
    assert avail.service_id == "ins-ladder" and avail.target_percent == 99.9
    assert avail.impact_seconds == pytest.approx(300)
    assert avail.availability == pytest.approx(1 - 300 / 7200)
    assert avail.error_budget_seconds == pytest.approx(7.2)
    assert avail.burn_rate == pytest.approx((300 / 7200) / 0.001)
    cf = reply.change_failure
    assert (cf.total_changes, cf.failed_changes, cf.change_failure_rate) == (1, 1, 1.0)
    assert cf.recovery_seconds.count == 1 and cf.recovery_seconds.p50 == pytest.approx(600)
    (ana,) = reply.interruptions
    assert ana.user_id == "ins-ana" and ana.total_interruptions == 1
    expected = hour_class(t0 + timedelta(seconds=5), "Europe/Paris")
    by_class = {
        "business": ana.total_business_hour_interruptions,
        "off": ana.total_off_hour_interruptions,
        "sleep": ana.total_sleep_hour_interruptions,
    }
    assert by_class == {k: int(k == expected) for k in by_class}
    assert [(s.source, s.alerts) for s in reply.top_sources] == [(f"src-{incident_id}", 2)]
