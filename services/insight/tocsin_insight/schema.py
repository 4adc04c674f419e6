"""insight's PostgreSQL schema: versioned migrations applied at start, and fact-table
generations (one schema each, ``insight_g<N>``) filled by replaying the topics.

Migrations are the plain-SQL files of ``migrations/`` (``NNNN_name.sql``), applied in order
and recorded in ``insight_schema_migrations``, each in one transaction that first takes a
transaction-scoped advisory lock: replicas starting together apply each migration once, the
others wait and then find it applied.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger("tocsin.insight.schema")

# pg_advisory_xact_lock key of insight's schema changes ("tocsin" in hex-ish letters).
SCHEMA_LOCK = 0x70C5_1A51
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_GENERATION = re.compile(r"^g[0-9]+$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order (gaps and duplicates are a
    packaging error)."""
    found: list[Migration] = []
    folder = resources.files("tocsin_insight") / "migrations"
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"insight migrations must be numbered 1..n without gaps: {versions}")
    return found


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[int]:
    """Apply the migrations not applied yet; the versions applied now (empty when none)."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS insight_schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM insight_schema_migrations")
        done = {int(row[0]) for row in await cur.fetchall()}  # type: ignore[index]
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO insight_schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration.version)
            log.info("applied migration %04d_%s", migration.version, migration.name)
    return applied_now


def generation_schema(name: str) -> sql.Identifier:
    if not _GENERATION.match(name):
        raise ValueError(f"generation {name!r}: expected g<number>")
    return sql.Identifier(f"insight_{name}")


def _ddl(file: str, name: str) -> sql.Composed:
    template = (resources.files("tocsin_insight") / file).read_text()
    return sql.SQL(template).format(schema=generation_schema(name))


def generation_ddl(name: str) -> sql.Composed:
    """A whole generation of the current definitions: its fact tables and the rollup."""
    return sql.Composed([_ddl("generation.sql", name), _ddl("rollup.sql", name)])


def rollup_ddl(name: str) -> sql.Composed:
    """The rollup table alone, for a generation made before it existed."""
    return _ddl("rollup.sql", name)


async def create_generation(conn: psycopg.AsyncConnection[object], definition: int) -> str:
    """A new, empty generation of fact tables (the next number); its name."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        cur = await conn.execute(
            "SELECT coalesce(max(substring(name from 2)::int), 0) + 1 FROM insight_generations"
        )
        row = await cur.fetchone()
        assert row is not None
        name = f"g{row[0]}"  # type: ignore[index]
        await conn.execute(generation_ddl(name))
        await conn.execute(
            "INSERT INTO insight_generations (name, definition) VALUES (%s, %s)",
            (name, definition),
        )
    log.info("created generation %s (definitions v%d)", name, definition)
    return name


async def serving(conn: psycopg.AsyncConnection[object]) -> str | None:
    cur = await conn.execute("SELECT generation FROM insight_serving")
    row = await cur.fetchone()
    return str(row[0]) if row else None  # type: ignore[index]


async def ensure_serving(conn: psycopg.AsyncConnection[object], definition: int) -> str:
    """The generation that serves; on a new database, a first one (serving while it fills)."""
    current = await serving(conn)
    if current is not None:
        return current
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK + 1,))
        current = await serving(conn)
        if current is not None:
            return current
        name = await create_generation(conn, definition)
        await conn.execute("INSERT INTO insight_serving (generation) VALUES (%s)", (name,))
    return name


async def serve_generation(conn: psycopg.AsyncConnection[object], name: str) -> None:
    """Make ``name`` the generation every reader and writer uses from now on."""
    await conn.execute(
        "INSERT INTO insight_serving AS s (only_row, generation) VALUES (true, %s) "
        "ON CONFLICT (only_row) DO UPDATE SET generation = excluded.generation, since = now(), "
        "previous = CASE WHEN s.generation <> excluded.generation THEN s.generation "
        "ELSE s.previous END",
        (name,),
    )
    log.info("generation %s serves", name)


async def writer_generation(conn: psycopg.AsyncConnection[object], definition: int) -> str:
    """The generation this build writes into: the serving one when it holds the same
    definitions; else the newest generation of ``definition`` (created, empty, when there is
    none: it fills from the topics' beginning while the serving one keeps answering, and
    serves once complete). Replicas of one build agree on it (advisory lock)."""
    current = await ensure_serving(conn, definition)
    cur = await conn.execute(
        "SELECT definition FROM insight_generations WHERE name = %s", (current,)
    )
    row = await cur.fetchone()
    if row is not None and int(row[0]) == definition:  # type: ignore[index]
        return current
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK + 2,))
        cur = await conn.execute(
            "SELECT name FROM insight_generations WHERE definition = %s "
            "ORDER BY substring(name from 2)::int DESC LIMIT 1",
            (definition,),
        )
        newest = await cur.fetchone()
        if newest is not None:
            return str(newest[0])  # type: ignore[index]
        name = await create_generation(conn, definition)
    log.warning(
        "generation %s serves definitions of another version; filling %s (definitions v%d) "
        "from the topics' beginning, it serves once complete",
        current,
        name,
        definition,
    )
    return name


GENERATION_TABLES = (
    "incident_events",
    "incident_facts",
    "notification_facts",
    "incident_notifications",
    "change_facts",
    "incident_rollup",
)


async def vacuum_generation(conn: psycopg.AsyncConnection[object], name: str) -> None:
    """VACUUM (ANALYZE) a generation's tables (autocommit: VACUUM runs outside a transaction)."""
    for table in GENERATION_TABLES:
        await conn.execute(
            sql.SQL("VACUUM (ANALYZE) {}.{}").format(generation_schema(name), sql.Identifier(table))
        )


def retired(serving: str, previous: str | None, generations: Sequence[str]) -> list[str]:
    """The generations to drop once ``serving`` serves (pure): every one older than it but
    ``previous``, the one that served before it (retention of one: an API replica's cached
    name, or a consumer that has not followed the switch yet, may still use it a moment).
    Without a known previous one, the newest older one is kept. Generations newer than the
    serving one are being filled and stay."""
    number = _number(serving)
    older = sorted((g for g in generations if _number(g) < number), key=_number)
    keep = previous if previous is not None else (older[-1] if older else None)
    return [g for g in older if g != keep]


def _number(name: str) -> int:
    if not _GENERATION.match(name):
        raise ValueError(f"generation {name!r}: expected g<number>")
    return int(name[1:])


async def retire_generations(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """Drop the generations :func:`retired` names (their schemas and their rows in
    insight_generations); the names dropped. Under the schema lock, with a lock timeout: a
    generation something still holds is left for the next switch (logged)."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            cur = await conn.execute("SELECT generation, previous FROM insight_serving")
            row = await cur.fetchone()
            if row is None:
                return []
            current, previous = str(row[0]), row[1]  # type: ignore[index]
            cur = await conn.execute("SELECT name FROM insight_generations")
            rows = [str(r[0]) for r in await cur.fetchall()]  # type: ignore[index]
            names = retired(current, None if previous is None else str(previous), rows)
            for name in names:
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(generation_schema(name))
                )
                await conn.execute("DELETE FROM insight_generations WHERE name = %s", (name,))
    except psycopg.errors.LockNotAvailable:
        log.warning("old generations still in use: not dropped this time")
        return []
    if names:
        log.info("dropped generations %s (%s serves, %s served before)", names, current, previous)
    return names
