"""The fact store: one batch of records, their facts and the consumer's offsets written in
ONE PostgreSQL transaction (exactly once from Kafka to Postgres).

Replays change nothing: an incident event is kept once by its id (only new ones are folded
into the incident's fact), a delivery outcome once by (request, attempt, outcome), a change
once by its id, a dead letter once by (topic, partition, offset); stored offsets only move
forward. Rows go in with COPY into temporary tables, then one INSERT ... SELECT each.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from tocsin.v1 import incident_pb2

from tocsin_insight import facts, rollup
from tocsin_insight.facts import ChangeFact, Directory, IncidentFact, NotificationFact
from tocsin_insight.schema import generation_schema

log = logging.getLogger("tocsin.insight.store")

Conn = psycopg.AsyncConnection[Any]
TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class EventRecord:
    event: incident_pb2.IncidentEvent
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class DeadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    reason: str


@dataclass
class Batch:
    """What one poll of the consumer became; ``offsets`` are the next offsets to read."""

    events: list[EventRecord] = field(default_factory=list)
    notifications: list[NotificationFact] = field(default_factory=list)
    changes: list[ChangeFact] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events) + len(self.notifications) + len(self.changes) + len(self.dead)


@dataclass(frozen=True)
class Written:
    new_events: int
    duplicate_events: int
    incidents: int
    notifications: int
    changes: int
    dead: int


_FACT_COLUMNS = [f.name for f in fields(IncidentFact)]
_NOTIFICATION_COLUMNS = [f.name for f in fields(NotificationFact)]
_CHANGE_COLUMNS = [f.name for f in fields(ChangeFact)]
_EVENT_COLUMNS = [
    "event_id",
    "incident_id",
    "type",
    "at",
    "actor",
    "message",
    "alert_summary",
    "topic",
    "partition",
    "offset",
]

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tmp_events (LIKE {s}.incident_events) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_facts (LIKE {s}.incident_facts) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_notifications (LIKE {s}.notification_facts)
    ON COMMIT DELETE ROWS;
"""


def _ident_list(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


class FactStore:
    """Writes batches into one generation's tables, on one connection it owns."""

    def __init__(self, conn: Conn, directory: Directory, *, keep_rollup: bool = True) -> None:
        """``keep_rollup`` false: the report's rollup is left alone (a replay, which
        rebuilds it whole once its facts are complete: rollup.rebuild)."""
        self._conn = conn
        self._directory = directory
        self._keep_rollup = keep_rollup
        self._temp_ready: set[str] = set()
        self._session_ready = False

    @property
    def conn(self) -> Conn:
        return self._conn

    async def offsets(
        self, generation: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The stored next offsets of ``partitions`` (absent: nothing read yet)."""
        wanted = list(partitions)
        if not wanted:
            return {}
        s = generation_schema(generation)
        cur = await self._conn.execute(
            sql.SQL(
                "SELECT topic, partition, next_offset FROM {s}.offsets "
                "WHERE (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            ).format(s=s),
            ([t for t, _ in wanted], [p for _, p in wanted]),
        )
        rows = await cur.fetchall()
        await self._conn.commit()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    async def _temp_tables(self, generation: str) -> None:
        if not self._session_ready:
            # A batch's commit need not wait for its WAL flush: a crash of PostgreSQL loses
            # whole transactions from the end (rows and offsets together, never one without
            # the other), which the consumer then reads again. Exactly once holds; a batch
            # no longer waits for an fsync.
            await self._conn.execute("SET synchronous_commit = off")
            self._session_ready = True
        # LIKE copies the generation's columns; one set per connection (and generation).
        if generation in self._temp_ready:
            return
        if self._temp_ready:
            await self._conn.execute(
                "DROP TABLE IF EXISTS tmp_events, tmp_facts, tmp_notifications"
            )
        await self._conn.execute(sql.SQL(_TEMP_TABLES).format(s=generation_schema(generation)))
        await self._conn.commit()
        self._temp_ready = {generation}

    async def write(self, generation: str, batch: Batch) -> Written:
        """Every row of ``batch`` and its offsets, in one transaction."""
        await self._temp_tables(generation)
        s = generation_schema(generation)
        slices: set[tuple[str, date]] = set()
        async with self._conn.transaction():
            new_events, incidents = await self._events(s, batch.events, slices)
            notifications, paged = await self._notifications(s, batch.notifications)
            changes = await self._changes(s, batch.changes)
            dead = await self._dead(batch.dead)
            if self._keep_rollup and (slices or paged):
                async with self._conn.cursor() as cur:
                    slices.update(await rollup.slices_of(cur, generation, paged))
                    await rollup.refresh(cur, generation, slices)
            await self._offsets(s, batch.offsets)
        return Written(
            new_events=new_events,
            duplicate_events=len(batch.events) - new_events,
            incidents=incidents,
            notifications=notifications,
            changes=changes,
            dead=dead,
        )

    async def _events(
        self, s: sql.Identifier, records: Sequence[EventRecord], slices: set[tuple[str, date]]
    ) -> tuple[int, int]:
        if not records:
            return 0, 0
        conn = self._conn
        async with conn.cursor() as cur:
            copy_sql = sql.SQL("COPY tmp_events ({}) FROM STDIN").format(
                _ident_list(_EVENT_COLUMNS)
            )
            async with cur.copy(copy_sql) as copy:
                for r in records:
                    e = r.event
                    await copy.write_row(
                        (
                            e.event_id,
                            e.incident.incident_id,
                            facts.event_type_name(e.type),
                            e.at.ToDatetime(tzinfo=UTC),
                            e.actor,
                            e.message,
                            e.alert.summary,
                            r.topic,
                            r.partition,
                            r.offset,
                        )
                    )
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {s}.incident_events SELECT * FROM tmp_events "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
                ).format(s=s)
            )
            fresh = {str(row[0]) for row in await cur.fetchall()}
            await cur.execute("TRUNCATE tmp_events")
            if not fresh:
                return 0, 0
            # Fold only what is new, in the order the records came (one partition per
            # incident: its events are in order).
            new = [r.event for r in records if r.event.event_id in fresh]
            seen: set[str] = set()
            ordered: list[incident_pb2.IncidentEvent] = []
            for event in new:  # an id twice in one batch: the first one counts
                if event.event_id not in seen:
                    seen.add(event.event_id)
                    ordered.append(event)
            ids = sorted({e.incident.incident_id for e in ordered})
            await cur.execute(
                sql.SQL(
                    "SELECT {cols} FROM {s}.incident_facts WHERE incident_id = ANY(%s) FOR UPDATE"
                ).format(cols=_ident_list(_FACT_COLUMNS), s=s),
                (ids,),
            )
            current: dict[str, IncidentFact] = {}
            for row in await cur.fetchall():
                fact = _fact_from_row(row)
                current[fact.incident_id] = fact
            for event in ordered:
                incident_id = event.incident.incident_id
                current[incident_id] = facts.fold_incident(
                    current.get(incident_id), event, self._directory
                )
            touched = [current[i] for i in ids]
            slices.update((f.service_id, f.created_at.astimezone(UTC).date()) for f in touched)
            async with cur.copy(
                sql.SQL("COPY tmp_facts ({}) FROM STDIN").format(_ident_list(_FACT_COLUMNS))
            ) as copy:
                for fact in touched:
                    await copy.write_row(_fact_row(fact))
            updates = sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
                for c in _FACT_COLUMNS
                if c != "incident_id"
            )
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {s}.incident_facts ({cols}) SELECT {cols} FROM tmp_facts "
                    "ON CONFLICT (incident_id) DO UPDATE SET {updates}"
                ).format(s=s, cols=_ident_list(_FACT_COLUMNS), updates=updates)
            )
            await cur.execute("TRUNCATE tmp_facts")
        return len(ordered), len(ids)

    async def _notifications(
        self, s: sql.Identifier, rows: Sequence[NotificationFact]
    ) -> tuple[int, list[str]]:
        """Rows written, and the incidents whose delivered pages changed."""
        if not rows:
            return 0, []
        async with self._conn.cursor() as cur:
            async with cur.copy(
                sql.SQL("COPY tmp_notifications ({}) FROM STDIN").format(
                    _ident_list(_NOTIFICATION_COLUMNS)
                )
            ) as copy:
                for n in rows:
                    await copy.write_row(tuple(getattr(n, c) for c in _NOTIFICATION_COLUMNS))
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {s}.notification_facts SELECT DISTINCT ON "
                    "(request_id, attempt, outcome) * FROM tmp_notifications "
                    "ON CONFLICT DO NOTHING RETURNING incident_id, user_id, outcome"
                ).format(s=s)
            )
            inserted = await cur.fetchall()
            await cur.execute("TRUNCATE tmp_notifications")
            delivered: dict[str, list[str]] = defaultdict(list)
            for incident_id, user_id, outcome in inserted:
                if outcome == "delivered":
                    delivered[str(incident_id)].append(str(user_id))
            if delivered:
                await cur.executemany(
                    sql.SQL(
                        "INSERT INTO {s}.incident_notifications AS t "
                        "(incident_id, delivered, users) VALUES (%s, %s, %s) "
                        "ON CONFLICT (incident_id) DO UPDATE SET "
                        "delivered = t.delivered + excluded.delivered, "
                        "users = ARRAY(SELECT DISTINCT u FROM unnest(t.users || excluded.users) u "
                        "ORDER BY u)"
                    ).format(s=s),
                    [(i, len(u), sorted(set(u))) for i, u in sorted(delivered.items())],
                )
        return len(inserted), sorted(delivered)

    async def _changes(self, s: sql.Identifier, rows: Sequence[ChangeFact]) -> int:
        if not rows:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(
                sql.SQL(
                    "INSERT INTO {s}.change_facts ({cols}) VALUES ({marks}) "
                    "ON CONFLICT (event_id) DO NOTHING"
                ).format(
                    s=s,
                    cols=_ident_list(_CHANGE_COLUMNS),
                    marks=sql.SQL(", ").join(sql.Placeholder() * len(_CHANGE_COLUMNS)),
                ),
                [tuple(getattr(c, n) for n in _CHANGE_COLUMNS) for c in rows],
            )
        return len(rows)

    async def _dead(self, rows: Sequence[DeadRecord]) -> int:
        if not rows:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(
                'INSERT INTO insight_dead_letters (topic, partition, "offset", key, value, '
                "headers, reason) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (
                        d.topic,
                        d.partition,
                        d.offset,
                        d.key,
                        d.value,
                        Jsonb(d.headers),
                        d.reason,
                    )
                    for d in rows
                ],
            )
        return len(rows)

    async def _offsets(self, s: sql.Identifier, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(
                sql.SQL(
                    "INSERT INTO {s}.offsets AS o (topic, partition, next_offset) "
                    "VALUES (%s, %s, %s) ON CONFLICT (topic, partition) DO UPDATE SET "
                    "next_offset = greatest(o.next_offset, excluded.next_offset)"
                ).format(s=s),
                [(t, p, o) for (t, p), o in sorted(offsets.items())],
            )


def _fact_row(fact: IncidentFact) -> tuple[Any, ...]:
    return tuple(
        Jsonb(dict(v)) if c == "labels" else list(v) if isinstance(v, tuple) else v
        for c, v in ((c, getattr(fact, c)) for c in _FACT_COLUMNS)
    )


def _fact_from_row(row: Sequence[Any]) -> IncidentFact:
    values = dict(zip(_FACT_COLUMNS, row, strict=True))
    for name in ("linked_changes", "engaged_users"):
        values[name] = tuple(values[name] or ())
    values["labels"] = tuple(sorted((values["labels"] or {}).items()))
    fact = IncidentFact(**values)
    return fact


async def set_targets(conn: Conn, generation: str, ends: dict[TopicPartition, int]) -> None:
    """The end offsets this generation must reach to be complete."""
    s = generation_schema(generation)
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            sql.SQL(
                "INSERT INTO {s}.targets (topic, partition, end_offset) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING"
            ).format(s=s),
            [(t, p, o) for (t, p), o in sorted(ends.items())],
        )


async def caught_up(conn: Conn, generation: str) -> bool:
    """Whether every partition reached the end offset it had when the generation started
    (never, for a generation that has no targets yet)."""
    s = generation_schema(generation)
    cur = await conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE coalesce(o.next_offset, 0) < t.end_offset) "
            "FROM {s}.targets t LEFT JOIN {s}.offsets o USING (topic, partition)"
        ).format(s=s)
    )
    row = await cur.fetchone()
    return row is not None and int(row[0]) > 0 and int(row[1]) == 0


async def mark_complete(conn: Conn, generation: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE insight_generations SET completed_at = %s WHERE name = %s AND completed_at IS NULL",
        (now, generation),
    )
    await conn.commit()
