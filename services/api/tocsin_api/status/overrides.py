"""Responders' overrides of a public component's state, kept in Redis (hash
``tocsin:api:status-overrides``: component id -> JSON of state, actor, until), read when
the public page is built. An override past its ``until`` no longer counts (the pure
``component_states`` checks it) and is dropped on the next write."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis
from tocsin_common.statuspage.components import ComponentOverride, ComponentState

OVERRIDES_KEY = "tocsin:api:status-overrides"
STATES: tuple[ComponentState, ...] = (
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)


class Overrides(Protocol):
    async def all(self) -> dict[str, ComponentOverride]: ...

    async def set(self, override: ComponentOverride, now: datetime) -> None: ...

    async def remove(self, component_id: str) -> bool: ...


def encode(override: ComponentOverride) -> str:
    until = override.until.isoformat() if override.until else None
    return json.dumps({"state": override.state, "actor": override.actor, "until": until})


def decode(component_id: str, raw: bytes | str) -> ComponentOverride | None:
    data = json.loads(raw)
    state = next((s for s in STATES if s == data.get("state")), None)
    if state is None:
        return None
    until = datetime.fromisoformat(data["until"]) if data.get("until") else None
    return ComponentOverride(component_id, state, str(data.get("actor", "")), until)


class RedisOverrides:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def all(self) -> dict[str, ComponentOverride]:
        found: dict[str, ComponentOverride] = {}
        for key, raw in (await self._redis.hgetall(OVERRIDES_KEY)).items():
            component_id = key.decode() if isinstance(key, bytes) else str(key)
            override = decode(component_id, raw)
            if override is not None:
                found[component_id] = override
        return found

    async def set(self, override: ComponentOverride, now: datetime) -> None:
        expired = [
            cid for cid, o in (await self.all()).items() if o.until is not None and o.until <= now
        ]
        async with self._redis.pipeline(transaction=True) as pipe:
            if expired:
                pipe.hdel(OVERRIDES_KEY, *expired)
            pipe.hset(OVERRIDES_KEY, override.component_id, encode(override))
            await pipe.execute()

    async def remove(self, component_id: str) -> bool:
        return bool(await self._redis.hdel(OVERRIDES_KEY, component_id))
