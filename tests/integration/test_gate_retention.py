"""The deploy gate's decisions past change_control.decision_retention are deleted, on real
PostgreSQL with insight's migrations applied (by the stack's insight), in batches, oldest
first; the ones within retention and the overrides stay."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from tocsin_common.transport import PostgresConnection
from tocsin_insight import gate_retention

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_decisions_past_retention_are_deleted_in_batches(stack: Stack) -> None:
    assert stack.services["insight"]  # its migrations made gate_decisions and the index
    run = os.urandom(3).hex()
    now = datetime.now(UTC)
    ages = {
        f"ret-{run}-{n}": timedelta(days=days)
        for n, days in enumerate((400, 300, 200, 150, 101, 99, 10))
    }
    pg = PostgresConnection.from_env()
    async with await psycopg.AsyncConnection.connect(
        pg.url, autocommit=True, **pg.client_options()
    ) as conn:
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'gate_decisions' "
            "AND indexname = 'gate_decisions_evaluated'"
        )
        assert await cur.fetchall(), "migration 0005 made the index"
        for evaluation_id, age in ages.items():
            await conn.execute(
                "INSERT INTO gate_decisions (evaluation_id, service, environment, version, "
                "change_id, evaluated_outcome, dry_run, evaluated_at) "
                "VALUES (%s, 'checkout', 'production', '1', %s, 'fail', false, %s)",
                (evaluation_id, f"chg-{run}", now - age),
            )
        await conn.execute(
            "INSERT INTO gate_overrides (evaluation_id, service, environment, version, actor, "
            "reason, created_at, expires_at, overridden_outcome, change_id) VALUES "
            "(%s, 'checkout', 'production', '1', 'mgr', 'r', %s, %s, 'fail', %s)",
            (f"ret-{run}-0", now - timedelta(days=400), now - timedelta(days=399), f"chg-{run}"),
        )
        # Retention 100 days, two rows a batch: five old decisions go in three batches.
        deleted = await gate_retention.prune(
            conn, gate_retention.cutoff(now, timedelta(days=100)), batch=2
        )
        assert deleted >= 5  # (and any other test's decision that old: none are)
        cur = await conn.execute(
            "SELECT evaluation_id FROM gate_decisions WHERE change_id = %s ORDER BY evaluated_at",
            (f"chg-{run}",),
        )
        assert [r[0] for r in await cur.fetchall()] == [f"ret-{run}-5", f"ret-{run}-6"]
        cur = await conn.execute(
            "SELECT count(*) FROM gate_overrides WHERE change_id = %s", (f"chg-{run}",)
        )
        assert (await cur.fetchone()) == (1,)
        assert (
            await gate_retention.prune(conn, gate_retention.cutoff(now, timedelta(days=100))) == 0
        )
