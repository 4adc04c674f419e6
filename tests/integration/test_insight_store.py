"""insight's store against the real PostgreSQL (a scratch database per module): migrations
applied once by replicas starting together, a batch and its offsets in one transaction, a
replayed batch changing nothing, and distributions computed by the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.transport import PostgresConnection
from tocsin_insight import reports, schema, views
from tocsin_insight.facts import Directory, notification_fact
from tocsin_insight.store import Batch, DeadRecord, EventRecord, FactStore

pytestmark = pytest.mark.integration

E = incident_pb2
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DIRECTORY = Directory(team_of=lambda s: "payments" if s.startswith("pay") else "")


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[PostgresConnection]:
    base = PostgresConnection.from_env()
    name = f"insight_test_{uuid.uuid4().hex[:10]}"
    admin = await psycopg.AsyncConnection.connect(
        base.url, autocommit=True, **base.client_options()
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    scratch = PostgresConnection(
        base.url.rsplit("/", 1)[0] + f"/{name}", base.password, base.sslmode, base.ca_file
    )
    try:
        yield scratch
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def connect(pg: PostgresConnection) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(pg.url, autocommit=True, **pg.client_options())


def incident_event(
    incident_id: str,
    kind: int,
    seconds: float,
    *,
    service: str = "pay-api",
    actor: str = "source",
    created: datetime = T0,
    message: str = "",
) -> incident_pb2.IncidentEvent:
    e = incident_pb2.IncidentEvent(
        event_id=f"{incident_id}:{kind}:{seconds}", type=kind, actor=actor, message=message
    )  # type: ignore[arg-type]
    e.at.FromDatetime(created + timedelta(seconds=seconds))
    e.incident.incident_id = incident_id
    e.incident.service_id = service
    e.incident.alert_count = 1
    e.incident.created_at.FromDatetime(created)
    return e


def story(
    incident_id: str,
    ack: float,
    resolve: float,
    *,
    service: str = "pay-api",
    created: datetime = T0,
) -> list[incident_pb2.IncidentEvent]:
    return [
        incident_event(
            incident_id, E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, service=service, created=created
        ),
        incident_event(
            incident_id,
            E.INCIDENT_EVENT_TYPE_ESCALATED,
            1,
            service=service,
            created=created,
            actor="system",
            message="escalated to level 1: paged ana",
        ),
        incident_event(
            incident_id,
            E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
            ack,
            service=service,
            created=created,
            actor="ana",
        ),
        incident_event(
            incident_id,
            E.INCIDENT_EVENT_TYPE_RESOLVED,
            resolve,
            service=service,
            created=created,
            actor="ana",
        ),
    ]


def batch_of(events: list[incident_pb2.IncidentEvent], partition: int = 0) -> Batch:
    batch = Batch()
    for offset, e in enumerate(events):
        batch.events.append(EventRecord(e, "incidents.events", partition, offset))
    batch.offsets[("incidents.events", partition)] = len(events)
    return batch


async def test_replicas_starting_together_apply_each_migration_once(
    database: PostgresConnection,
) -> None:
    conns = [await connect(database) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(schema.migrate(c) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, 0, len(schema.migrations())]
        cur = await conns[0].execute("SELECT count(*) FROM insight_schema_migrations")
        assert (await cur.fetchone()) == (len(schema.migrations()),)
        # Serving: one generation, whoever asks first.
        names = await asyncio.gather(*(schema.ensure_serving(c, 1) for c in conns))
        assert len(set(names)) == 1
        cur = await conns[0].execute("SELECT count(*) FROM insight_generations")
        assert (await cur.fetchone()) == (1,)
        assert await schema.migrate(conns[0]) == []  # idempotent
    finally:
        for c in conns:
            await c.close()


async def facts_rows(conn: psycopg.AsyncConnection[Any], generation: str) -> list[Any]:
    cur = await conn.execute(
        f"SELECT * FROM insight_{generation}.incident_facts ORDER BY incident_id"
    )
    return await cur.fetchall()


async def test_a_batch_is_written_once_and_a_replay_changes_nothing(
    database: PostgresConnection,
) -> None:
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        store = FactStore(conn, DIRECTORY)
        events = story("inc-a", 90, 600) + story("inc-b", 30, 120, service="web")
        batch = batch_of(events)
        status = notification_pb2.NotificationStatus(
            request_id="r1",
            incident_id="inc-a",
            user_id="ana",
            channel="sms",
            outcome=notification_pb2.DELIVERY_OUTCOME_DELIVERED,
            attempt=1,
        )
        status.at.FromDatetime(T0 + timedelta(seconds=2))
        batch.notifications.append(notification_fact(status, DIRECTORY))
        batch.dead.append(
            DeadRecord("incidents.events", 1, 5, b"k", b"\xff", {"h": "v"}, "DecodeError: x")
        )
        batch.offsets[("incidents.events", 1)] = 6
        written = await store.write(generation, batch)
        assert (written.new_events, written.incidents, written.notifications) == (8, 2, 1)
        rows = await facts_rows(conn, generation)
        cur = await conn.execute(
            f"SELECT incident_id, team_id, first_ack_by, auto_resolved, escalation_count, "
            f"extract(epoch FROM first_ack_at - created_at), "
            f"extract(epoch FROM resolved_at - created_at) "
            f"FROM insight_{generation}.incident_facts ORDER BY incident_id"
        )
        assert [tuple(r) for r in await cur.fetchall()] == [
            ("inc-a", "payments", "ana", False, 1, 90, 600),
            ("inc-b", "", "ana", False, 1, 30, 120),
        ]
        # The same records again (a crash before the offsets were read back, a producer's
        # retry): nothing changes, however often.
        for _ in range(2):
            again = await store.write(generation, batch_of(events))
            assert again.new_events == 0 and again.duplicate_events == 8
            again_n = Batch(notifications=list(batch.notifications), dead=list(batch.dead))
            assert (await store.write(generation, again_n)).notifications == 0
        assert await facts_rows(conn, generation) == rows
        cur = await conn.execute(
            f"SELECT delivered, users FROM insight_{generation}.incident_notifications"
        )
        assert await cur.fetchall() == [(1, ["ana"])]
        cur = await conn.execute('SELECT count(*) FROM insight_dead_letters WHERE "offset" = 5')
        assert (await cur.fetchone()) == (1,)
        # Offsets only move forward.
        stale = Batch(offsets={("incidents.events", 0): 3})
        await store.write(generation, stale)
        offsets = await store.offsets(
            generation, [("incidents.events", 0), ("incidents.events", 1), ("changes", 0)]
        )
        assert offsets == {("incidents.events", 0): 8, ("incidents.events", 1): 6}
        # An event that comes later folds into the stored fact.
        late = incident_event(
            "inc-b", E.INCIDENT_EVENT_TYPE_NOTE_ADDED, 900, service="web", actor="bob"
        )
        b = Batch(events=[EventRecord(late, "incidents.events", 0, 8)])
        assert (await store.write(generation, b)).new_events == 1
        cur = await conn.execute(
            f"SELECT event_count FROM insight_{generation}.incident_facts "
            "WHERE incident_id = 'inc-b'"
        )
        assert (await cur.fetchone()) == (5,)
    finally:
        await conn.close()


async def test_report_distributions_by_service_and_week_in_a_time_zone(
    database: PostgresConnection,
) -> None:
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        store = FactStore(conn, DIRECTORY)
        events: list[incident_pb2.IncidentEvent] = []
        # pay-api: acks after 10, 20, 30, 40 s -> mean 25, p50 25, p90 37, p95 38.5, max 40
        for i, ack in enumerate((10, 20, 30, 40)):
            events += story(f"p{i}", ack, ack * 10, created=T0 + timedelta(hours=i))
        # web: one incident on Sunday 23:30 UTC = Monday 08:30 in Tokyo
        sunday = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
        events += story("w0", 60, 120, service="web", created=sunday)
        await store.write(generation, batch_of(events))
        f = reports.make_filter(time_zone="Asia/Tokyo")
        rows = await reports.report(conn, generation, reports.report_query(f, ["service"], "week"))
        by = {(r.group["service"], r.period_start): r for r in rows}
        week_tokyo = datetime(2026, 3, 1, 15, 0, tzinfo=UTC)  # Monday 2 March 00:00 JST
        pay = by[("pay-api", week_tokyo)]
        assert pay.incidents == 4
        ack = pay.seconds_to_first_ack
        assert (ack.count, ack.mean, ack.p50, ack.max) == (4, 25, 25, 40)
        assert ack.p90 == pytest.approx(37) and ack.p95 == pytest.approx(38.5)
        assert pay.seconds_to_resolve.p50 == 250
        assert pay.escalation_rate == 0 and pay.auto_resolved_share == 0
        assert by[("web", week_tokyo)].incidents == 1
        # In UTC the web incident falls in the week before.
        utc = await reports.report(
            conn,
            generation,
            reports.report_query(reports.make_filter(service_id="web"), [], "week"),
        )
        assert [r.period_start for r in utc] == [datetime(2026, 2, 23, tzinfo=UTC)]
        # Filters narrow; no group: one row.
        only = await reports.report(
            conn,
            generation,
            reports.report_query(
                reports.make_filter(team_id="payments", since=T0 + timedelta(hours=2)), [], ""
            ),
        )
        assert len(only) == 1 and only[0].incidents == 2 and only[0].period_start is None
        # Open and unacknowledged: counted as an incident, not as a zero in the durations.
        await store.write(
            generation,
            Batch(
                events=[
                    EventRecord(
                        incident_event(
                            "open", E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, service="pay-open"
                        ),
                        "x",
                        0,
                        0,
                    )
                ]
            ),
        )
        (open_row,) = await reports.report(
            conn,
            generation,
            reports.report_query(reports.make_filter(service_id="pay-open"), [], ""),
        )
        assert open_row.incidents == 1
        assert open_row.seconds_to_first_ack.count == open_row.seconds_to_resolve.count == 0
        assert open_row.seconds_to_engage.count == 0
    finally:
        await conn.close()


async def test_a_build_of_new_definitions_fills_a_generation_of_its_own(
    database: PostgresConnection,
) -> None:
    conns = [await connect(database) for _ in range(3)]
    try:
        await schema.migrate(conns[0])
        serving = await schema.ensure_serving(conns[0], 1)
        assert await schema.writer_generation(conns[0], 1) == serving
        # Replicas of a build with definitions v2 start together: one new generation.
        names = await asyncio.gather(*(schema.writer_generation(c, 2) for c in conns))
        assert len(set(names)) == 1 and names[0] != serving
        assert await schema.serving(conns[0]) == serving  # the old one answers meanwhile
        cur = await conns[0].execute(
            "SELECT definition FROM insight_generations WHERE name = %s", (names[0],)
        )
        assert (await cur.fetchone()) == (2,)
        await schema.serve_generation(conns[0], names[0])
        assert await schema.writer_generation(conns[1], 2) == names[0]
    finally:
        for c in conns:
            await c.close()


async def test_uptime_over_a_window_from_the_incidents_impact(
    database: PostgresConnection,
) -> None:
    """The status page's uptime (views.uptime) over a 10-hour window: pay-api's 1-hour
    major outage inside it and the one straddling its start (only its hour inside counts)
    make 80 %; web, whose incident had no impact, and a service without any are 100 %."""
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        store = FactStore(conn, DIRECTORY)
        events = story("up-a", 60, 3600, created=T0 + timedelta(hours=2))
        events += story("up-b", 60, 7200, created=T0 - timedelta(hours=1))
        events += story("up-c", 60, 3600, service="web")
        for e in events:
            if e.incident.incident_id in ("up-a", "up-b"):
                e.incident.labels["impact"] = "major"
        await store.write(generation, batch_of(events))
        found = await views.uptime(
            conn, generation, ["pay-api", "web", "quiet"], T0, T0 + timedelta(hours=10)
        )
        by = {a.service: a for a in found}
        # up-a: 1 h inside; up-b: the hour after T0 (it ran from T0-1h to T0+1h)
        assert by["pay-api"].availability == pytest.approx(0.8)
        assert by["pay-api"].up_time_pct == pytest.approx(80.0)
        assert by["web"].availability == 1.0 and by["quiet"].availability == 1.0
    finally:
        await conn.close()
