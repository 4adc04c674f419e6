"""The deploy gate's decisions are pruned past change_control.decision_retention: once at
start, then every hour, with the retention the config has then; a failed pass does not stop
it (time injected; the DELETE itself runs on real PostgreSQL in
tests/integration/test_gate_retention.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from tocsin_common.clock import FakeClock
from tocsin_insight import gate_retention

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class Cursor:
    rowcount = 0


class Conn:
    def __init__(self, log: list[datetime], fail: list[bool]) -> None:
        self.log, self.fail = log, fail

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def execute(self, query: str, params: tuple[Any, ...]) -> Cursor:
        if self.fail and self.fail.pop(0):
            raise psycopg.OperationalError("the database is away")
        assert "DELETE FROM gate_decisions" in query
        self.log.append(params[0])
        return Cursor()


class Pool:
    def __init__(self, fail: list[bool]) -> None:
        self.cutoffs: list[datetime] = []
        self.fail = fail

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        yield Conn(self.cutoffs, self.fail)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_prunes_at_start_then_every_hour_with_the_current_retention() -> None:
    clock = FakeClock(T0)
    pool = Pool(fail=[False, True, False])
    retention = [timedelta(days=90)]
    task = asyncio.create_task(gate_retention.keep_pruned(pool, lambda: retention[0], clock))
    try:
        await _settle()
        assert pool.cutoffs == [T0 - timedelta(days=90)]
        clock.advance(timedelta(minutes=59))
        await _settle()
        assert len(pool.cutoffs) == 1
        clock.advance(timedelta(minutes=1))  # this pass fails: logged, tried again later
        await _settle()
        assert len(pool.cutoffs) == 1 and not task.done()
        retention[0] = timedelta(days=7)  # a reloaded config
        clock.advance(timedelta(hours=1))
        await _settle()
        assert pool.cutoffs[-1] == T0 + timedelta(hours=2) - timedelta(days=7)
    finally:
        task.cancel()


def test_cutoff() -> None:
    assert gate_retention.cutoff(T0, timedelta(days=1)) == T0 - timedelta(days=1)
