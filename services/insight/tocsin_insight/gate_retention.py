"""Retention of the deploy gate's decisions (``gate_decisions``, docs/change-control.md):
those evaluated longer than ``change_control.decision_retention`` ago are deleted, by every
insight replica once at start and then every :data:`EVERY` (deletes of the same rows by two
replicas are harmless), in batches so no statement holds many locks for long.

The overrides (``gate_overrides``) are kept: an override names its change and stays on that
change's timeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from tocsin_common.clock import Clock

__all__ = ["BATCH", "EVERY", "cutoff", "keep_pruned", "prune"]

log = logging.getLogger("tocsin.insight.gate_retention")

EVERY = timedelta(hours=1)
BATCH = 5_000

Connect = Callable[[], Any]  # psycopg_pool-like: async with pool.connection() as conn


def cutoff(now: datetime, retention: timedelta) -> datetime:
    """Decisions evaluated before this instant are past retention (pure)."""
    return now - retention


async def prune(conn: psycopg.AsyncConnection[Any], before: datetime, batch: int = BATCH) -> int:
    """Delete the decisions evaluated before ``before``, ``batch`` at a time (oldest first,
    each batch its own transaction); how many."""
    deleted = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "DELETE FROM gate_decisions WHERE evaluation_id IN (SELECT evaluation_id "
                "FROM gate_decisions WHERE evaluated_at < %s ORDER BY evaluated_at LIMIT %s)",
                (before, batch),
            )
        deleted += cur.rowcount
        if cur.rowcount < batch:
            return deleted


async def keep_pruned(
    pool: Any,
    retention: Callable[[], timedelta],
    clock: Clock,
    every: timedelta = EVERY,
) -> None:
    """Prune now, then every ``every``, with the retention the config has then. A failed
    pass (the database away a moment) is logged and tried again next time."""
    while True:
        try:
            async with pool.connection() as conn:
                deleted = await prune(conn, cutoff(clock.now(), retention()))
            if deleted:
                log.info("deleted %d deploy-gate decisions past retention", deleted)
        except psycopg.Error as e:
            log.warning("deploy-gate decisions not pruned this time: %s", e)
        await clock.sleep(every.total_seconds())
