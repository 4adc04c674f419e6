"""The report's rollup (``incident_rollup``, rollup.sql): per UTC day of creation,
service, team, urgency, priority and first acknowledger, the sums a Report needs and each
duration's values sorted.

It is a function of ``incident_facts`` and ``incident_notifications`` and nothing else, so
it is never updated by deltas: the fact writer recomputes, in the transaction that wrote
the facts, every (service, day) slice its batch touched (``refresh``), and a replay builds
it whole once its facts are complete (``rebuild``). Either way the rows are what one
``GROUP BY`` over the facts gives, and a report read from it equals one read from the facts
(tests/integration/test_insight_rollup.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from tocsin_insight.schema import SCHEMA_LOCK, generation_schema, rollup_ddl

Conn = psycopg.AsyncConnection[Any]

# Rollup writers of one generation take this transaction-scoped advisory lock (with the
# generation's number) before recomputing slices: two replicas' batches touching the same
# (service, day) then recompute it one after the other, the second seeing the first's facts.
ROLLUP_LOCK = SCHEMA_LOCK + 16

KEYS = ("service_id", "team_id", "urgency", "priority", "first_ack_by")
DURATIONS = (
    "seconds_to_first_ack",
    "seconds_to_resolve",
    "seconds_to_engage",
    "seconds_to_mobilize",
)
# The UTC day an incident belongs to in the rollup.
DAY = sql.SQL("(f.created_at AT TIME ZONE 'UTC')::date")


def aggregates() -> sql.Composable:
    """The rollup's measures over a set of facts ``f`` (left-joined to their pages ``n``),
    in the order of :data:`MEASURES`; shared by the rollup and a report's raw part."""
    parts: list[sql.Composable] = [
        sql.SQL("count(*)::int"),
        sql.SQL("(count(*) FILTER (WHERE f.max_level >= 2))::int"),
        sql.SQL("(count(*) FILTER (WHERE f.resolved_at IS NOT NULL))::int"),
        sql.SQL("(count(*) FILTER (WHERE f.resolved_at IS NOT NULL AND f.auto_resolved))::int"),
        sql.SQL("sum(f.alert_count)::bigint"),
        sql.SQL("sum(f.suppressed_alerts)::bigint"),
        sql.SQL("coalesce(sum(n.delivered), 0)::bigint"),
        sql.SQL("sum(f.escalation_count)::bigint"),
        sql.SQL("sum(f.reassignments)::bigint"),
        # numeric: an exact sum, whatever the order the rows come in.
        sql.SQL("sum(f.snoozed_seconds::numeric)"),
    ]
    for d in DURATIONS:
        c = sql.SQL("f.{}").format(sql.Identifier(d))
        parts.append(
            sql.SQL(
                "coalesce(array_agg({c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL), "
                "'{{}}'::float8[])"
            ).format(c=c)
        )
    return sql.SQL(", ").join(parts)


MEASURES = (
    "incidents",
    "escalated",
    "resolved",
    "auto_resolved",
    "alerts",
    "suppressed_alerts",
    "notifications",
    "escalations",
    "reassignments",
    "snoozed_seconds",
    *DURATIONS,
)


def _columns() -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in ("day", *KEYS, *MEASURES))


def _select(s: sql.Identifier, source: sql.Composable) -> sql.Composable:
    # ``source`` yields the facts ``f`` to roll up.
    return sql.SQL(
        "SELECT {day}, {keys}, {aggregates} "
        "FROM {source} LEFT JOIN {s}.incident_notifications n USING (incident_id) "
        "GROUP BY 1, {positions}"
    ).format(
        day=DAY,
        keys=sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(k)) for k in KEYS),
        aggregates=aggregates(),
        s=s,
        source=source,
        positions=sql.SQL(", ").join(sql.Literal(i + 2) for i in range(len(KEYS))),
    )


async def lock(cur: psycopg.AsyncCursor[Any], generation: str) -> None:
    await cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (ROLLUP_LOCK, int(generation[1:])))


async def refresh(
    cur: psycopg.AsyncCursor[Any], generation: str, slices: Iterable[tuple[str, date]]
) -> int:
    """Recompute the rollup rows of the (service, UTC day) ``slices`` from the facts, inside
    the caller's transaction; how many slices."""
    wanted = sorted(set(slices))
    if not wanted:
        return 0
    s = generation_schema(generation)
    await lock(cur, generation)
    services = [w[0] for w in wanted]
    days = [w[1] for w in wanted]
    await cur.execute(
        sql.SQL(
            "DELETE FROM {s}.incident_rollup r USING unnest(%s::text[], %s::date[]) t(s, d) "
            "WHERE r.day = t.d AND r.service_id = t.s"
        ).format(s=s),
        (services, days),
    )
    # The facts of each slice through the (service_id, created_at) index.
    source = sql.SQL(
        "unnest(%s::text[], %s::date[]) t(s, d) JOIN {s}.incident_facts f "
        "ON f.service_id = t.s AND f.created_at >= (t.d::timestamp AT TIME ZONE 'UTC') "
        "AND f.created_at < ((t.d + 1)::timestamp AT TIME ZONE 'UTC')"
    ).format(s=s)
    await cur.execute(
        sql.SQL("INSERT INTO {s}.incident_rollup ({cols}) {select}").format(
            s=s, cols=_columns(), select=_select(s, source)
        ),
        (services, days),
    )
    return len(wanted)


async def rebuild(conn: Conn, generation: str) -> None:
    """The whole rollup of ``generation`` again from its facts, in one transaction."""
    s = generation_schema(generation)
    async with conn.transaction(), conn.cursor() as cur:
        await lock(cur, generation)
        await cur.execute(sql.SQL("DELETE FROM {s}.incident_rollup").format(s=s))
        await cur.execute(
            sql.SQL("INSERT INTO {s}.incident_rollup ({cols}) {select}").format(
                s=s, cols=_columns(), select=_select(s, sql.SQL("{s}.incident_facts f").format(s=s))
            )
        )


async def slices_of(
    cur: psycopg.AsyncCursor[Any], generation: str, incident_ids: Iterable[str]
) -> list[tuple[str, date]]:
    """The (service, UTC day) slices of the incidents that have facts."""
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    await cur.execute(
        sql.SQL(
            "SELECT DISTINCT f.service_id, {day} FROM {s}.incident_facts f "
            "WHERE f.incident_id = ANY(%s)"
        ).format(day=DAY, s=generation_schema(generation)),
        (ids,),
    )
    return [(str(r[0]), r[1]) for r in await cur.fetchall()]


async def ensure(conn: Conn) -> list[str]:
    """Give every generation made before the rollup existed its rollup table, built from its
    facts (once: replicas starting together wait on the schema lock); the ones it built."""
    cur = await conn.execute(
        "SELECT name FROM insight_generations "
        "WHERE to_regclass(format('%I.incident_rollup', 'insight_' || name)) IS NULL "
        "ORDER BY substring(name from 2)::int"
    )
    missing = [str(row[0]) for row in await cur.fetchall()]
    built: list[str] = []
    for name in missing:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur = await conn.execute(
                "SELECT to_regclass(format('%%I.incident_rollup', %s::text))", (f"insight_{name}",)
            )
            row = await cur.fetchone()
            if row is not None and row[0] is not None:
                continue  # another replica did it meanwhile
            # The rollup table alone: the rest of today's generation DDL may not fit an older
            # generation (a column added since: its index failed on a v1 generation).
            await conn.execute(rollup_ddl(name))
            await rebuild(conn, name)
            built.append(name)
    return built
