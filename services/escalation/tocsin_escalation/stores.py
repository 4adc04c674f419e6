"""Escalation's own state in Redis: per-incident escalation state and runtime overrides.

- ``tocsin:escalation:<incident id>``   EscalationState JSON (30 days after the last change)
- ``tocsin:overrides:<schedule id>``    hash: override id -> JSON {user_id, start, end}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from tocsin_escalation.lifecycle import EscalationState
from tocsin_escalation.schedule import OverrideSpan

_STATE_TTL = 30 * 24 * 3600

Overrides = list[OverrideSpan]


class EscalationStateStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, incident_id: str) -> EscalationState:
        return EscalationState.from_json(await self._redis.get(_state_key(incident_id)))

    @staticmethod
    def queue_get(pipe: Pipeline, incident_id: str) -> None:
        """Queue :meth:`get` on a pipeline; decode its result with ``EscalationState.from_json``."""
        pipe.get(_state_key(incident_id))

    @staticmethod
    def queue_put(pipe: Pipeline, incident_id: str, state: EscalationState) -> None:
        pipe.set(_state_key(incident_id), state.to_json(), ex=_STATE_TTL)


def _state_key(incident_id: str) -> str:
    return f"tocsin:escalation:{incident_id}"


class OverlapError(ValueError):
    def __init__(self, other: OverrideSpan) -> None:
        super().__init__(other.override_id)
        self.other = other


def _encode(span: OverrideSpan) -> str:
    return json.dumps(
        {
            "user_id": span.user_id,
            "start": span.start.astimezone(UTC).isoformat(),
            "end": span.end.astimezone(UTC).isoformat(),
            "created_by": span.created_by,
        }
    )


def _decode(override_id: str, raw: bytes | str) -> OverrideSpan:
    data = json.loads(raw)
    return OverrideSpan(
        data["user_id"],
        datetime.fromisoformat(data["start"]),
        datetime.fromisoformat(data["end"]),
        override_id,
        data.get("created_by", ""),
    )


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OverrideStore:
    """Runtime overrides (created over gRPC), per schedule."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def _key(schedule_id: str) -> str:
        return f"tocsin:overrides:{schedule_id}"

    async def list(self, schedule_id: str) -> Overrides:
        return self.decode(await self._redis.hgetall(self._key(schedule_id)))

    async def for_schedules(self, schedule_ids: Iterable[str]) -> dict[str, Overrides]:
        ids = list(schedule_ids)
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                self.queue_list(pipe, schedule_id)
            found = await pipe.execute()
        return {sid: self.decode(raw) for sid, raw in zip(ids, found, strict=True)}

    def queue_list(self, pipe: Pipeline, schedule_id: str) -> None:
        """Queue :meth:`list` on a pipeline; decode its result with :meth:`decode`."""
        pipe.hgetall(self._key(schedule_id))

    @staticmethod
    def decode(raw: dict[bytes | str, bytes | str]) -> Overrides:
        return sorted(
            (_decode(_s(k), v) for k, v in raw.items()), key=lambda o: (o.start, o.override_id)
        )

    async def create(
        self, schedule_id: str, span: OverrideSpan, fixed: Iterable[OverrideSpan] = ()
    ) -> None:
        """Store ``span`` unless it overlaps another override of the same user (checked
        against ``fixed`` ones from the file and the stored ones, atomically)."""
        key = self._key(schedule_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hgetall(key)
                    existing = [_decode(_s(k), v) for k, v in raw.items()]
                    for other in [*fixed, *existing]:
                        if (
                            other.user_id == span.user_id
                            and other.start < span.end
                            and span.start < other.end
                        ):
                            raise OverlapError(other)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, span.override_id, _encode(span))
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def get(self, schedule_id: str, override_id: str) -> OverrideSpan | None:
        raw = await self._redis.hget(self._key(schedule_id), override_id)
        return None if raw is None else _decode(override_id, raw)

    async def delete(self, schedule_id: str, override_id: str) -> bool:
        return bool(await self._redis.hdel(self._key(schedule_id), override_id))
