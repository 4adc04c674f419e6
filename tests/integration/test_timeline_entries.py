"""Timeline entries that change no state (tocsin_common.timeline) against a real Redis, with
escalation's projection: appended once, carrying the projection's incident, parked while
the projection does not hold the incident and written right after its first event, on the
Watch stream too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from tocsin.v1 import incident_pb2
from tocsin_common import timeline
from tocsin_escalation.projection import IncidentProjection

from tests.integration.harness import infra_from_env

pytestmark = pytest.mark.integration

E = incident_pb2


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    _, redis_url = infra_from_env()
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def event(incident_id: str, kind: int, status: int, title: str) -> incident_pb2.IncidentEvent:
    e = E.IncidentEvent(
        event_id=str(uuid.uuid4()),
        type=kind,  # type: ignore[arg-type]
        incident=E.Incident(
            incident_id=incident_id,
            service_id="tl-svc",
            title=title,
            status=status,  # type: ignore[arg-type]
        ),
    )
    e.incident.created_at.FromDatetime(datetime.now(UTC))
    e.at.FromDatetime(datetime.now(UTC))
    return e


def entry(kind: int, message: str, entry_id: str = "") -> incident_pb2.IncidentEvent:
    e = E.IncidentEvent(
        event_id=entry_id or str(uuid.uuid4()),
        type=kind,  # type: ignore[arg-type]
        actor="notification",
        message=message,
        # What the caller saw: the append must not keep it.
        incident=E.Incident(incident_id="stale", title="stale"),
    )
    e.at.FromDatetime(datetime.now(UTC))
    return e


async def run(redis: Redis, queue: object) -> list[object]:
    async with redis.pipeline(transaction=True) as pipe:
        queue(pipe)  # type: ignore[operator]
        return list(await pipe.execute())


async def test_an_entry_carries_the_projections_incident_and_is_appended_once(
    redis: Redis,
) -> None:
    projection = IncidentProjection(redis)
    incident_id = str(uuid.uuid4())
    position = await projection.position()
    triggered = event(
        incident_id, E.INCIDENT_EVENT_TYPE_TRIGGERED, E.INCIDENT_STATUS_TRIGGERED, "a"
    )
    acked = event(
        incident_id, E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, E.INCIDENT_STATUS_ACKNOWLEDGED, "b"
    )
    notified = entry(E.INCIDENT_EVENT_TYPE_NOTIFIED, "Notified Nina by webhook")
    assert await run(redis, lambda p: projection.queue_apply(p, triggered)) == [1]
    assert await run(redis, lambda p: projection.queue_apply(p, acked)) == [1]
    # Twice in one pipeline and once more: a redelivered outcome.
    twice = await run(
        redis,
        lambda p: [projection.queue_append(p, notified, incident_id, "tl-svc") for _ in "ab"],
    )
    assert twice == [1, 0]
    assert await run(
        redis, lambda p: timeline.queue_append(p, notified, incident_id, "tl-svc")
    ) == [0]

    events = await projection.timeline(incident_id)
    assert [e.type for e in events] == [
        E.INCIDENT_EVENT_TYPE_TRIGGERED,
        E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
        E.INCIDENT_EVENT_TYPE_NOTIFIED,
    ]
    last = events[-1]
    assert last.message == "Notified Nina by webhook" and last.event_id == notified.event_id
    # The incident as the projection held it when the entry was applied: acknowledged.
    assert last.incident == acked.incident

    watched = []
    async for _, watched_event in projection.watch(position, block_ms=100):
        if watched_event.incident.incident_id == incident_id:
            watched.append(watched_event)
        if len(watched) == 3:
            break
    assert watched[-1] == last


async def test_an_entry_before_its_incident_waits_parked_then_follows_its_first_event(
    redis: Redis,
) -> None:
    projection = IncidentProjection(redis)
    incident_id = str(uuid.uuid4())
    early = entry(E.INCIDENT_EVENT_TYPE_NOTIFIED, "Notified Nina by webhook")
    assert await run(redis, lambda p: projection.queue_append(p, early, incident_id, "tl-svc")) == [
        2
    ]
    assert await projection.timeline(incident_id) == []
    assert await redis.ttl(timeline.parked_key(incident_id)) > 0  # never left behind

    triggered = event(
        incident_id, E.INCIDENT_EVENT_TYPE_TRIGGERED, E.INCIDENT_STATUS_TRIGGERED, "a"
    )
    assert await run(redis, lambda p: projection.queue_apply(p, triggered)) == [1]
    events = await projection.timeline(incident_id)
    assert [e.event_id for e in events] == [triggered.event_id, early.event_id]
    assert events[1].incident == triggered.incident
    assert not await redis.exists(timeline.parked_key(incident_id))


async def test_an_entry_on_a_resolved_incident_keeps_its_expiry(redis: Redis) -> None:
    projection = IncidentProjection(redis)
    incident_id = str(uuid.uuid4())
    resolved = event(incident_id, E.INCIDENT_EVENT_TYPE_RESOLVED, E.INCIDENT_STATUS_RESOLVED, "a")
    await run(redis, lambda p: projection.queue_apply(p, resolved))
    late = entry(E.INCIDENT_EVENT_TYPE_NOTIFIED, "Could not notify Nina")
    assert await run(redis, lambda p: projection.queue_append(p, late, incident_id, "tl-svc")) == [
        1
    ]
    assert await redis.ttl(timeline.timeline_key(incident_id)) > 0
    assert len(await projection.timeline(incident_id)) == 2
