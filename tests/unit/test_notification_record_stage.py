"""The record stage: one status record per outcome, the delivery row and the timeline entry
in one Redis pipeline, written even through a Redis failure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common import timeline
from tocsin_common.topics import NOTIFICATIONS_STATUS, Topic
from tocsin_notification.pipeline.job import Job
from tocsin_notification.pipeline.record_stage import RecordStage

N = notification_pb2
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> datetime:
        return T0

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, Any]] = []

    async def enqueue(self, topic: Topic, key: str, message: Any) -> asyncio.Future[Any]:
        self.records.append((topic.name, key, message))
        return asyncio.get_running_loop().create_future()


class Pipe:
    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: self.commands.append((name, args))


class Batcher:
    """Fails the first ``failures`` runs as a Redis that went away would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pipes: list[Pipe] = []

    async def run(self, commands: Any) -> list[Any]:
        pipe = Pipe()
        commands(pipe)
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection refused")
        self.pipes.append(pipe)
        return []


def job() -> Job:
    return Job(
        N.NotificationRequest(
            request_id="req-1",
            user_id="nina",
            contact_method_id="hook",
            incident=incident_pb2.Incident(incident_id="inc-1", service_id="checkout"),
        )
    )


async def test_a_delivered_page_is_one_status_and_its_row_and_entry_in_one_pipeline() -> None:
    producer, batcher, clock = Producer(), Batcher(0), Clock()
    stage = RecordStage(producer, batcher, clock, watch_backlog=lambda: 42)  # type: ignore[arg-type]
    the_job = job()
    status = await stage.record(
        the_job, "webhook", N.DELIVERY_OUTCOME_DELIVERED, "HTTP 200", 1, "Nina"
    )
    assert [(t, k) for t, k, _ in producer.records] == [(NOTIFICATIONS_STATUS.name, "inc-1")]
    assert len(the_job.produced) == 1
    (pipe,) = batcher.pipes
    assert [name for name, _ in pipe.commands] == ["rpush", "expire", "eval"]
    script, _, *rest = pipe.commands[2][1]
    assert script == timeline.APPEND
    entry = incident_pb2.IncidentEvent.FromString(rest[6])
    assert entry.message == "Notified Nina by webhook (attempt 1): HTTP 200"
    assert rest[7:] == ["checkout", 42]
    assert entry.event_id == timeline.notified_entry(status, "Nina").event_id  # type: ignore[union-attr]


async def test_a_duplicate_has_its_row_and_no_entry() -> None:
    batcher = Batcher(0)
    stage = RecordStage(Producer(), batcher, Clock())  # type: ignore[arg-type]
    await stage.record(job(), "", N.DELIVERY_OUTCOME_DUPLICATE, "already delivered")
    assert [name for name, _ in batcher.pipes[0].commands] == ["rpush", "expire"]


async def test_a_redis_failure_is_retried_until_the_row_and_entry_are_written() -> None:
    # Raising would leave the page without an outcome; its retry would then find it
    # delivered, and the row and the entry of the delivery would never be written.
    batcher, clock = Batcher(2), Clock()
    stage = RecordStage(Producer(), batcher, clock)  # type: ignore[arg-type]
    status = await stage.record(job(), "webhook", N.DELIVERY_OUTCOME_DELIVERED, "HTTP 200")
    assert status.outcome == N.DELIVERY_OUTCOME_DELIVERED
    assert clock.slept == [0.1, 0.2]
    assert [name for name, _ in batcher.pipes[0].commands] == ["rpush", "expire", "eval"]
