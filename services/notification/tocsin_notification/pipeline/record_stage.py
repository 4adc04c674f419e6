"""Stage 7 — record: every outcome is a NotificationStatus on notifications.status and a row
for ListDeliveries; one the timeline shows (delivered, retrying, failed, rate limited) is
also an entry on the incident's timeline, appended here to the projection's Redis
timeline (tocsin_common.timeline) in the same pipeline as the row — not a command through
correlation: it changes nothing of the incident. A final failure is also a dead letter on
notifications.deadletter carrying the attempt history.

The entry's id derives from the request, the attempt and the outcome, so a replayed or
redelivered outcome is appended once; the status record on Kafka is its durable copy
(insight's page facts, and what a rebuilt read model replays)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, cast

from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common import timeline
from tocsin_common.clock import Clock
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import (
    INCIDENTS_COMMANDS,
    NOTIFICATIONS_DEADLETTER,
    NOTIFICATIONS_REQUESTS,
    NOTIFICATIONS_STATUS,
    Topic,
)
from tocsin_common.tracing import kafka_headers

from tocsin_notification.pipeline.job import Attempt, Job
from tocsin_notification.redis_batch import CommandBatcher

log = logging.getLogger("tocsin.notification")

SERVICE = "notification"
DELIVERIES_TTL_S = 30 * 24 * 3600


class Producer(Protocol):
    async def enqueue(
        self, topic: Topic, key: str, message: Message | bytes
    ) -> asyncio.Future[RecordMetadata]: ...


class PreparedProducer(Producer, Protocol):
    async def enqueue_prepared(
        self, topic: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[RecordMetadata]: ...


class RecordStage:
    """`spans` False (this process exports no spans): the records go to the producer
    without a PRODUCER span each, which would be thrown away unseen; they still carry the
    current trace context in their headers."""

    def __init__(
        self,
        producer: Producer,
        batcher: CommandBatcher,
        clock: Clock,
        *,
        spans: bool = True,
        watch_backlog: Callable[[], int] = lambda: timeline.DEFAULT_WATCH_BACKLOG,
    ) -> None:
        self._producer = producer
        self._batcher = batcher
        self._clock = clock
        self._watch_backlog = watch_backlog
        self._prepared: PreparedProducer | None = None
        if not spans and hasattr(producer, "enqueue_prepared"):
            self._prepared = cast(PreparedProducer, producer)

    async def _enqueue(
        self, topic: Topic, key: str, message: Message
    ) -> asyncio.Future[RecordMetadata]:
        if self._prepared is None:
            return await self._producer.enqueue(topic, key, message)
        return await self._prepared.enqueue_prepared(
            topic.name, key.encode("utf-8"), message.SerializeToString(), kafka_headers()
        )

    async def record(
        self,
        job: Job,
        channel: str,
        outcome: notification_pb2.DeliveryOutcome.ValueType,
        detail: str,
        attempt: int = 1,
        who: str = "",
        note: str = "",
    ) -> notification_pb2.NotificationStatus:
        """``note``: for an automation action, its timeline entry (a note by the rule's
        automation actor, through correlation like a person's note); none for an outcome
        that is not worth one (a duplicate). A page's outcome is an entry appended here."""
        request = job.request
        now = self._clock.now()
        status = notification_pb2.NotificationStatus(
            request_id=request.request_id,
            idempotency_key=request.idempotency_key,
            incident_id=request.incident.incident_id,
            user_id=request.user_id,
            contact_method_id=request.contact_method_id,
            channel=channel,
            outcome=outcome,
            attempt=attempt,
            detail=detail,
        )
        set_timestamp(status.at, now)
        futures = [await self._enqueue(NOTIFICATIONS_STATUS, status.incident_id, status)]
        automation = request.HasField("automation")
        if automation and note and request.incident.service_id:
            futures.append(await self._automation_note(request, note, status.at))
        # Not awaited here: the consumer commits the request's offset only once it is
        # acknowledged, and the producer batches the records of many pages meanwhile.
        job.produced.extend(futures)
        key = f"tocsin:deliveries:{status.incident_id}"
        row = status.SerializeToString()
        entry = (
            timeline.notified_entry(status, who) if status.incident_id and not automation else None
        )
        service_id = request.incident.service_id
        backlog = self._watch_backlog()

        def row_commands(pipe: Any) -> None:
            pipe.rpush(key, row)
            pipe.expire(key, DELIVERIES_TTL_S)
            if entry is not None:
                timeline.queue_append(pipe, entry, status.incident_id, service_id, backlog)

        # A status page subscriber's delivery has no incident: no row, no timeline entry.
        if status.incident_id:
            await self._write(row_commands)
        log.info(
            "page %s",
            notification_pb2.DeliveryOutcome.Name(outcome).lower(),
            extra={
                "incident_id": status.incident_id,
                "user_id": status.user_id,
                "channel": channel,
                "attempt": attempt,
                "detail": detail,
            },
        )
        return status

    async def _write(self, commands: Callable[[Any], None]) -> None:
        """The row and the timeline entry, retried until Redis takes them. Raising would
        end the page without an outcome, and its retry would find it delivered (a
        duplicate): the row and the entry of what happened would never be written. A
        retry after an answer lost on the way may add the row twice; the entry is
        appended once (its seen mark)."""
        backoff = 0.1
        while True:
            try:
                await self._batcher.run(commands)
                return
            except (RedisError, OSError):
                log.warning("writing a page's outcome to Redis failed; retrying", exc_info=True)
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _automation_note(
        self,
        request: notification_pb2.NotificationRequest,
        note: str,
        at: Timestamp,
    ) -> asyncio.Future[RecordMetadata]:
        """An automation action's outcome on the incident's timeline: a note by
        ``automation:<rule>``, which correlation applies like a person's note."""
        command = incident_pb2.IncidentCommand(
            command_id=str(uuid.uuid4()),
            incident_id=request.incident.incident_id,
            service_id=request.incident.service_id,
            actor=f"automation:{request.automation.rule_id}",
            note=incident_pb2.NoteCommand(text=note),
        )
        command.requested_at.CopyFrom(at)
        return await self._enqueue(INCIDENTS_COMMANDS, command.service_id, command)

    async def note(self, request: notification_pb2.NotificationRequest, note: str) -> None:
        """A note on an automation action's incident, by its rule's actor, durable."""
        at = Timestamp()
        set_timestamp(at, self._clock.now())
        await (await self._automation_note(request, note, at))

    async def dead_letter(self, job: Job, reason: str, history: list[Attempt]) -> None:
        source = job.source
        letter = alert_pb2.DeadLetter(
            reason=json.dumps(
                {"reason": reason, "attempts": [a.as_dict() for a in history]},
                separators=(",", ":"),
            ),
            source_topic=source.topic or NOTIFICATIONS_REQUESTS.name,
            source_partition=source.partition,
            source_offset=source.offset,
            original_key=source.key or _key(job.request).encode(),
            original_value=source.value or job.request.SerializeToString(),
            original_headers=source.headers,
            failed_service=SERVICE,
        )
        set_timestamp(letter.failed_at, self._clock.now())
        job.produced.append(
            await self._enqueue(NOTIFICATIONS_DEADLETTER, _key(job.request), letter)
        )


def _key(request: notification_pb2.NotificationRequest) -> str:
    """The request's key on notifications.requests: a page's user, an action's incident."""
    if request.HasField("automation"):
        return request.incident.incident_id
    return request.user_id


def now_iso(clock: Clock) -> str:
    value: datetime = clock.now()
    return value.isoformat()
