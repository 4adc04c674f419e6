"""The read side of incidents in Redis, built from incidents.events.

- tocsin:incident:<id>           the latest Incident (protobuf bytes)
- tocsin:incident:<id>:timeline  every IncidentEvent of it, in order (protobuf bytes)
- tocsin:incidents               incident ids by creation time (sorted set)
- tocsin:incident-event-seen:<event id>  marks an applied event (replays apply once)
- channel tocsin:incident-events  every applied event, for IncidentService.Watch
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from redis.asyncio import Redis
from tocsin.v1 import incident_pb2

_SEEN_TTL = 7 * 24 * 3600
WATCH_CHANNEL = "tocsin:incident-events"


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


class IncidentProjection:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def seen(self, event_id: str) -> bool:
        """Whether this event was applied before."""
        return bool(await self._redis.exists(f"tocsin:incident-event-seen:{event_id}"))

    async def apply(self, event: incident_pb2.IncidentEvent) -> bool:
        """Record the event; False when it was applied before (a redelivery)."""
        first = await self._redis.set(
            f"tocsin:incident-event-seen:{event.event_id}", 1, nx=True, ex=_SEEN_TTL
        )
        if not first:
            return False
        incident = event.incident
        key = f"tocsin:incident:{incident.incident_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, incident.SerializeToString())
            pipe.rpush(f"{key}:timeline", event.SerializeToString())
            pipe.zadd(
                "tocsin:incidents",
                {incident.incident_id: incident.created_at.ToNanoseconds() / 1e9},
            )
            pipe.publish(WATCH_CHANNEL, event.SerializeToString())
            await pipe.execute()
        return True

    async def get(self, incident_id: str) -> incident_pb2.Incident | None:
        raw = await self._redis.get(f"tocsin:incident:{incident_id}")
        if raw is None:
            return None
        incident = incident_pb2.Incident()
        incident.ParseFromString(_bytes(raw))
        return incident

    async def timeline(self, incident_id: str) -> list[incident_pb2.IncidentEvent]:
        events = []
        for raw in await self._redis.lrange(f"tocsin:incident:{incident_id}:timeline", 0, -1):
            event = incident_pb2.IncidentEvent()
            event.ParseFromString(_bytes(raw))
            events.append(event)
        return events

    async def recent(self, limit: int) -> list[incident_pb2.Incident]:
        ids = await self._redis.zrevrange("tocsin:incidents", 0, max(limit, 1) * 4 - 1)
        found: list[incident_pb2.Incident] = []
        for incident_id in ids:
            incident = await self.get(_bytes(incident_id).decode())  # type: ignore[arg-type]
            if incident is not None:
                found.append(incident)
        return found

    async def watch(self) -> AsyncIterator[incident_pb2.IncidentEvent]:
        """Every event applied from now on, by any replica."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(WATCH_CHANNEL)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                event = incident_pb2.IncidentEvent()
                event.ParseFromString(_bytes(message["data"]))
                yield event
        finally:
            await pubsub.unsubscribe(WATCH_CHANNEL)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
