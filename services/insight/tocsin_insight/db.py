"""Connections to insight's PostgreSQL (TOCSIN_POSTGRES_URL, its password secret, TLS)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from tocsin_common.transport import PostgresConnection

log = logging.getLogger("tocsin.insight.db")

Conn = psycopg.AsyncConnection[Any]


async def connect(pg: PostgresConnection, *, application: str = "tocsin-insight") -> Conn:
    """One autocommit connection: every transaction is an explicit ``conn.transaction()``."""
    return await psycopg.AsyncConnection.connect(
        pg.url, autocommit=True, application_name=application, **pg.client_options()
    )


async def wait_for_postgres(pg: PostgresConnection, within: float = 60.0) -> Conn:
    """A connection once the server answers (it may still be starting); the last error
    after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await connect(pg)
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for PostgreSQL at %s: %s", pg.display, str(error).strip())
            await asyncio.sleep(0.5)


def pool(pg: PostgresConnection, max_size: int = 8) -> AsyncConnectionPool:
    """Connections for the API's queries (opened by ``await pool.open()``)."""
    return AsyncConnectionPool(
        conninfo=pg.url,
        kwargs={
            "autocommit": True,
            "application_name": "tocsin-insight-api",
            **pg.client_options(),
        },
        min_size=1,
        max_size=max_size,
        open=False,
    )
