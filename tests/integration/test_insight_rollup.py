"""The report's rollup against the real PostgreSQL: on random incidents (written in random
batches, an incident's events often split between batches, pages before and after their
incident), a report read from the rollup equals the one read from the facts alone, field
for field, for random groupings, periods, zones (DST, a +05:45 zone) and since/until; both
agree with PostgreSQL's own percentile_cont; the rollup kept by the writer equals one
rebuilt from the facts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.transport import PostgresConnection
from tocsin_insight import reports, rollup, schema
from tocsin_insight.facts import Directory, notification_fact
from tocsin_insight.store import Batch, EventRecord, FactStore

from tests.integration.test_insight_store import connect, database

pytestmark = pytest.mark.integration

__all__ = ["database"]  # the scratch-database fixture, used by name

E = incident_pb2
# 40 days around Europe's and America's autumn DST changes (25 Oct / 1 Nov 2026).
START = datetime(2026, 10, 5, 0, 0, tzinfo=UTC)
SPAN = 40 * 86400
SERVICES = ("pay-api", "pay-db", "web", "search")
PEOPLE = ("ana", "bob", "cy", "dee")
ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe")
DIRECTORY = Directory(
    team_of=lambda s: "payments" if s.startswith("pay") else ("web" if s == "web" else ""),
    priority_of=lambda service, severity, urgency, labels: "P1" if urgency == "high" else "",
)


def event(
    incident: str,
    n: int,
    kind: int,
    at: datetime,
    created: datetime,
    service: str,
    *,
    actor: str = "source",
    message: str = "",
    low: bool = False,
    snoozed_until: datetime | None = None,
) -> incident_pb2.IncidentEvent:
    e = incident_pb2.IncidentEvent(
        event_id=f"{incident}:{n}", type=kind, actor=actor, message=message
    )  # type: ignore[arg-type]
    e.at.FromDatetime(at)
    e.incident.incident_id = incident
    e.incident.service_id = service
    e.incident.alert_count = 1 + n // 3
    e.incident.urgency = E.URGENCY_LOW if low else E.URGENCY_HIGH
    e.incident.created_at.FromDatetime(created)
    if snoozed_until is not None:
        e.incident.snoozed_until.FromDatetime(snoozed_until)
    return e


def random_incident(rng: random.Random, i: int) -> list[incident_pb2.IncidentEvent]:
    incident = f"r{i}"
    created = START + timedelta(seconds=rng.uniform(0, SPAN))
    service = rng.choice(SERVICES)
    low = rng.random() < 0.3
    out = [event(incident, 0, E.INCIDENT_EVENT_TYPE_TRIGGERED, created, created, service, low=low)]
    t = created

    def add(kind: int, **kw: Any) -> None:
        out.append(event(incident, len(out), kind, t, created, service, low=low, **kw))

    for level in range(1, rng.choice((1, 1, 2, 3)) + 1):
        t += timedelta(seconds=rng.uniform(1, 600))
        add(E.INCIDENT_EVENT_TYPE_ESCALATED, actor="system", message=f"escalated to level {level}")
    if rng.random() < 0.2:
        t += timedelta(seconds=rng.uniform(1, 60))
        add(E.INCIDENT_EVENT_TYPE_SNOOZED, actor="ana", snoozed_until=t + timedelta(minutes=30))
    if rng.random() < 0.85:  # acknowledged, by one to three people
        for person in rng.sample(PEOPLE, rng.choice((1, 1, 2, 3))):
            t += timedelta(seconds=round(rng.uniform(0, 3600), rng.choice((0, 3, 6))))
            add(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, actor=person)
    if rng.random() < 0.1:
        t += timedelta(seconds=30)
        add(E.INCIDENT_EVENT_TYPE_REASSIGNED, actor="bob")
    if rng.random() < 0.8:
        t += timedelta(seconds=rng.uniform(0, 20000))
        add(E.INCIDENT_EVENT_TYPE_RESOLVED, actor=rng.choice(("source", "system", "ana", "cy")))
    return out


def page(rng: random.Random, i: int, n: int) -> Any:
    status = notification_pb2.NotificationStatus(
        request_id=f"req-{i}-{n}",
        incident_id=f"r{i}",
        user_id=rng.choice(PEOPLE),
        channel="sms",
        outcome=rng.choice(
            (notification_pb2.DELIVERY_OUTCOME_DELIVERED, notification_pb2.DELIVERY_OUTCOME_FAILED)
        ),
        attempt=1,
    )
    status.at.FromDatetime(START + timedelta(seconds=rng.uniform(0, SPAN)))
    return notification_fact(status, DIRECTORY)


async def fill(conn: psycopg.AsyncConnection[Any], generation: str, rng: random.Random) -> None:
    """~400 incidents: events in random batches (one incident's in order, split anywhere),
    pages (some for incidents whose first event comes later) mixed in."""
    stories = [random_incident(rng, i) for i in range(400)]
    pending = [list(s) for s in stories]
    pages = [page(rng, rng.randrange(420), n) for n in range(300)]
    store = FactStore(conn, DIRECTORY)
    offset = 0
    while any(pending) or pages:
        batch = Batch()
        for events in pending:
            take = rng.choice((0, 0, 1, 2, len(events)))
            for e in events[:take]:
                batch.events.append(EventRecord(e, "incidents.events", 0, offset))
                offset += 1
            del events[:take]
        for _ in range(rng.randrange(0, 40)):
            if pages:
                batch.notifications.append(pages.pop())
        batch.offsets[("incidents.events", 0)] = offset
        await store.write(generation, batch)


def random_query(rng: random.Random) -> reports.ReportQuery:
    since = until = None
    if rng.random() < 0.7:
        since = START + timedelta(seconds=rng.uniform(-86400, SPAN / 2))
    if rng.random() < 0.5:
        until = START + timedelta(seconds=rng.uniform(SPAN / 2, SPAN + 86400))
    f = reports.make_filter(
        since=since,
        until=until,
        time_zone=rng.choice(ZONES),
        team_id=rng.choice(("", "", "", "payments")),
        urgency=rng.choice(("", "", "high")),
    )
    dims = rng.sample(list(reports.DIMENSIONS), rng.randrange(0, 3))
    return reports.report_query(f, dims, rng.choice(("", "day", "week", "month")))


def approx_equal(a: reports.ReportRow, b: reports.ReportRow) -> None:
    """``b`` (PostgreSQL's avg and float sums) equals ``a`` but for float rounding of means
    and sums: counts, percentiles and max exactly."""
    assert (a.group, a.period_start, a.incidents) == (b.group, b.period_start, b.incidents)
    for name in reports.DURATIONS:
        da, db = getattr(a, name), getattr(b, name)
        assert (da.count, da.p50, da.p90, da.p95, da.max) == (
            db.count,
            db.p50,
            db.p90,
            db.p95,
            db.max,
        ), name
        assert da.mean == pytest.approx(db.mean, rel=1e-12, abs=1e-9), name
    for name in (
        "escalation_rate",
        "auto_resolved_share",
        "alerts_per_incident",
        "snoozed_seconds",
    ):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-9), name
    assert (a.notifications, a.escalations, a.reassignments) == (
        b.notifications,
        b.escalations,
        b.reassignments,
    )


async def rollup_rows(conn: psycopg.AsyncConnection[Any], generation: str) -> list[Any]:
    cur = await conn.execute(
        f"SELECT * FROM insight_{generation}.incident_rollup "
        "ORDER BY day, service_id, team_id, urgency, priority, first_ack_by"
    )
    return await cur.fetchall()


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_report_from_the_rollup_equals_the_report_from_the_facts(
    database: PostgresConnection, seed: int
) -> None:
    rng = random.Random(seed)
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        await fill(conn, generation, rng)
        kept = await rollup_rows(conn, generation)
        assert kept, "the writer kept a rollup"
        await rollup.rebuild(conn, generation)
        assert await rollup_rows(conn, generation) == kept
        from_rollup_days = 0
        for _ in range(40):
            query = random_query(rng)
            plan = await reports.plan_report(conn, generation, query)
            from_rollup_days += len(plan.days)
            fast = await reports.report(conn, generation, query)
            raw = await reports.report(conn, generation, query, use_rollup=False)
            assert fast == raw, query
            in_sql = await reports.report_in_sql(conn, generation, query)
            assert len(fast) == len(in_sql), query
            for a, b in zip(fast, in_sql, strict=True):
                approx_equal(a, b)
        assert from_rollup_days > 200  # the rollup did answer most days
    finally:
        await conn.close()


async def test_the_plan_reads_whole_days_of_one_period_from_the_rollup(
    database: PostgresConnection,
) -> None:
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        created = datetime(2026, 3, 2, 12, tzinfo=UTC)  # Monday
        events = [
            event(f"w{d}", 0, E.INCIDENT_EVENT_TYPE_TRIGGERED, c, c, "web")
            for d in range(14)
            for c in [created + timedelta(days=d)]
        ]
        batch = Batch(
            events=[EventRecord(e, "incidents.events", 0, i) for i, e in enumerate(events)]
        )
        await FactStore(conn, DIRECTORY).write(generation, batch)
        since = datetime(2026, 3, 3, 6, tzinfo=UTC)
        f = reports.make_filter(since=since, time_zone="Europe/Berlin")
        plan = await reports.plan_report(conn, generation, reports.report_query(f, [], "week"))
        days = [d.day for d, _ in plan.days]
        # 3 March (since inside it) and the Sundays 8 and 15 March (a Berlin week starts at
        # 23:00 UTC) come from the facts; the others from the rollup.
        assert days == [4, 5, 6, 7, 9, 10, 11, 12, 13, 14]
        assert plan.ranges == (
            (since, datetime(2026, 3, 4, tzinfo=UTC)),
            (datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)),
            (datetime(2026, 3, 15, tzinfo=UTC), None),
        )
        week = dict(plan.days)
        assert week[plan.days[0][0]] == datetime(2026, 3, 1, 23, tzinfo=UTC)
        rows = await reports.report(conn, generation, reports.report_query(f, [], "week"))
        assert [(r.period_start, r.incidents) for r in rows] == [
            (datetime(2026, 3, 1, 23, tzinfo=UTC), 6),  # 3 March 12:00 .. 8 March 12:00
            (datetime(2026, 3, 8, 23, tzinfo=UTC), 7),  # 9 .. 15 March 12:00
        ]
    finally:
        await conn.close()


async def test_a_generation_older_than_the_rollup_gets_it_at_start_whatever_its_columns(
    database: PostgresConnection,
) -> None:
    """A generation an older build made (no rollup; change_facts without the columns added
    since) gets its rollup, built from its facts, and nothing else of today's DDL: running
    the whole generation DDL over it failed on the index of a column it lacks, and insight
    could not start (met by the pipeline bench's --baseline)."""
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation = await schema.create_generation(conn, 1)
        await fill(conn, generation, random.Random(3))
        kept = await rollup_rows(conn, generation)
        assert kept
        await conn.execute(f"DROP TABLE insight_{generation}.incident_rollup")
        await conn.execute(f"DROP INDEX insight_{generation}.change_facts_change")
        await conn.execute(f"ALTER TABLE insight_{generation}.change_facts DROP COLUMN change_id")
        assert await rollup.ensure(conn) == [generation]
        assert await rollup_rows(conn, generation) == kept
        assert await rollup.ensure(conn) == []  # once
    finally:
        await conn.close()
