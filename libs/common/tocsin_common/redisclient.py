"""The one place Tocsin's processes make Redis clients: URL, ACL user, password and TLS
from tocsin_common.transport.RedisConnection (so no code path forgets the credentials)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from tocsin_common.transport import RedisConnection


def redis_client(connection: RedisConnection, **options: Any) -> Redis:
    """An asyncio Redis client; ``options`` go to redis-py (timeouts, pool size...)."""
    return Redis.from_url(connection.url, **connection.client_options(), **options)


def blocking_redis_client(
    connection: RedisConnection, *, max_connections: int, timeout: float
) -> Redis:
    """A client on a blocking pool: a burst waits up to ``timeout`` for a connection."""
    pool = BlockingConnectionPool.from_url(
        connection.url,
        max_connections=max_connections,
        timeout=timeout,
        **connection.client_options(),
    )
    return Redis(connection_pool=pool)
