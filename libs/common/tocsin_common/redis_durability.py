"""Start-up check that Redis keeps every acknowledged write across a crash.

Notification's idempotency marks ("never pages twice") and escalation's timers and state
("a timer fires once", "never lost") are written to Redis, and Redis answers a write before
it is on disk unless it runs with ``appendonly yes`` and ``appendfsync always``. With the
default ``appendfsync everysec`` a crash (power loss, kernel panic, OOM kill of the host)
loses up to a second of acknowledged writes: a page marked delivered pages again, a timer
claimed and acknowledged fires again or a new one is lost.

So the services that rely on it ask Redis at start (``CONFIG GET``) and refuse to start
without both settings. ``TOCSIN_REDIS_DURABILITY_CHECK`` chooses:

- ``enforce`` (default): refuse to start, naming the settings;
- ``warn``: start, logging a warning at every start (for a managed Redis that forbids
  ``CONFIG`` or whose durability is assured some other way, e.g. synchronous replicas).

The decision is pure (`durability_problem`, `check_mode`); `check_redis_durability` asks
Redis and applies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("tocsin.redis")

ENV = "TOCSIN_REDIS_DURABILITY_CHECK"
REQUIRED: dict[str, str] = {"appendonly": "yes", "appendfsync": "always"}


class DurabilityMode(StrEnum):
    ENFORCE = "enforce"
    WARN = "warn"


class RedisDurabilityError(RuntimeError):
    """Redis does not keep acknowledged writes across a crash and the check enforces it."""


def check_mode(env: Mapping[str, str]) -> DurabilityMode:
    """The mode from ``TOCSIN_REDIS_DURABILITY_CHECK`` (default enforce)."""
    raw = env.get(ENV, "").strip().lower() or DurabilityMode.ENFORCE.value
    try:
        return DurabilityMode(raw)
    except ValueError:
        choices = ", ".join(m.value for m in DurabilityMode)
        raise ValueError(f"{ENV}: {raw!r} is not one of {choices}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def durability_problem(config: Mapping[Any, Any]) -> str | None:
    """What is wrong with Redis's persistence settings (a ``CONFIG GET`` answer), or None
    when every acknowledged write is on disk before Redis answers."""
    have = {_text(k).lower(): _text(v).lower() for k, v in config.items()}
    wrong = [
        f"{name} is {have.get(name, '(not reported)')!r}"
        for name, want in REQUIRED.items()
        if have.get(name) != want
    ]
    if not wrong:
        return None
    return (
        "Redis may lose acknowledged writes in a crash ("
        + ", ".join(wrong)
        + "); set 'appendonly yes' and 'appendfsync always' in redis.conf"
    )


def _message(service: str, what: str, guarantee: str) -> str:
    return (
        f"{service}: {what}. {guarantee} rely on it (docs/architecture.md, Durability). "
        f"To start anyway, set {ENV}=warn."
    )


async def check_redis_durability(
    redis: Any, service: str, guarantee: str, env: Mapping[str, str]
) -> str | None:
    """Ask Redis for its persistence settings; raise RedisDurabilityError (mode enforce) or
    log a warning (mode warn) when they do not keep every acknowledged write. Returns the
    problem found, None when Redis is durable. ``guarantee`` names what depends on it."""
    mode = check_mode(env)
    try:
        config = await redis.config_get("append*")
    except ResponseError as e:  # CONFIG forbidden (managed Redis, ACL, renamed command)
        problem = f"cannot read Redis's persistence settings (CONFIG GET: {e})"
    else:
        found = durability_problem(config)
        if found is None:
            return None
        problem = found
    message = _message(service, problem, guarantee)
    if mode is DurabilityMode.ENFORCE:
        raise RedisDurabilityError(message)
    log.warning("REDIS NOT DURABLE, %s=warn: %s", ENV, message)
    return problem


async def require_durable_redis(
    redis: Any,
    service: str,
    guarantee: str,
    env: Mapping[str, str],
    *,
    retry_s: float = 1.0,
) -> None:
    """`check_redis_durability` at a service's start: waits for Redis to answer (it may
    start after the service), and turns a refusal into SystemExit with the message."""
    while True:
        try:
            await check_redis_durability(redis, service, guarantee, env)
            return
        except RedisDurabilityError as e:
            log.error("%s", e)
            raise SystemExit(str(e)) from None
        except (RedisConnectionError, RedisTimeoutError) as e:
            log.warning("waiting for Redis to check its persistence settings: %s", e)
            await asyncio.sleep(retry_s)
