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
from redis.asyncio.client import Pipeline
from tocsin.v1 import incident_pb2

from tocsin_escalation.pipelining import queue_script

_SEEN_TTL = 7 * 24 * 3600
WATCH_CHANNEL = "tocsin:incident-events"

# Applies one event unless it was applied before: the seen mark and the writes it guards
# in one atomic step, so it can be queued on a pipeline with many others (one round trip).
_APPLY = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return 1
"""


def _seen_key(event_id: str) -> str:
    return f"tocsin:incident-event-seen:{event_id}"


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


class IncidentProjection:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._apply = redis.register_script(_APPLY)

    @staticmethod
    def queue_seen(pipe: Pipeline, event_id: str) -> None:
        """Queue "was this event applied before?" on a pipeline; its result is 0 or 1."""
        pipe.exists(_seen_key(event_id))

    def queue_apply(self, pipe: Pipeline, event: incident_pb2.IncidentEvent) -> None:
        """Queue the event's application on a pipeline: recorded unless it was applied
        before (a redelivery); its result there is 1, or 0 for a redelivery."""
        incident = event.incident
        key = f"tocsin:incident:{incident.incident_id}"
        raw_event = event.SerializeToString()
        queue_script(
            pipe,
            self._apply,
            [_seen_key(event.event_id), key, f"{key}:timeline", "tocsin:incidents"],
            [
                _SEEN_TTL,
                incident.SerializeToString(),
                raw_event,
                repr(incident.created_at.ToNanoseconds() / 1e9),
                incident.incident_id,
                WATCH_CHANNEL,
            ],
        )

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
