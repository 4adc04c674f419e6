"""Stage 7 — record: every outcome is a NotificationStatus on notifications.status, an
entry on the incident's timeline (IncidentCommand.timeline_entry on incidents.commands,
keyed by service), and a row for ListDeliveries; a final failure is also a dead letter on
notifications.deadletter carrying the attempt history."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime
from typing import Any, Protocol, cast

from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
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


_OUTCOME_WORDS = {
    notification_pb2.DELIVERY_OUTCOME_DELIVERED: "Notified",
    notification_pb2.DELIVERY_OUTCOME_RETRYING: "Notification attempt failed for",
    notification_pb2.DELIVERY_OUTCOME_FAILED: "Could not notify",
    notification_pb2.DELIVERY_OUTCOME_RATE_LIMITED: "Notification delayed (rate limit) for",
}


class RecordStage:
    """`spans` False (this process exports no spans): the records go to the producer
    without a PRODUCER span each, which would be thrown away unseen; they still carry the
    current trace context in their headers."""

    def __init__(
        self, producer: Producer, batcher: CommandBatcher, clock: Clock, *, spans: bool = True
    ) -> None:
        self._producer = producer
        self._batcher = batcher
        self._clock = clock
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
        automation actor); none for an outcome that is not worth one (a duplicate)."""
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
        words = _OUTCOME_WORDS.get(outcome)
        if request.HasField("automation"):
            if note and request.incident.service_id:
                futures.append(await self._automation_note(request, note, status.at))
        elif words and request.incident.service_id:
            command = incident_pb2.IncidentCommand(
                command_id=str(uuid.uuid4()),
                incident_id=request.incident.incident_id,
                service_id=request.incident.service_id,
                actor="notification",
                timeline_entry=incident_pb2.TimelineEntryCommand(
                    type=incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED,
                    message=_timeline_message(words, who or request.user_id, channel, status),
                ),
            )
            # The same instant: copied, not converted from the datetime again (~6 us).
            command.requested_at.CopyFrom(status.at)
            futures.append(await self._enqueue(INCIDENTS_COMMANDS, command.service_id, command))
        # Not awaited here: the consumer commits the request's offset only once these are
        # acknowledged, and the producer batches the records of many pages meanwhile.
        job.produced.extend(futures)
        key = f"tocsin:deliveries:{status.incident_id}"
        row = status.SerializeToString()

        def row_commands(pipe: Any) -> None:
            pipe.rpush(key, row)
            pipe.expire(key, DELIVERIES_TTL_S)

        await self._batcher.run(row_commands)
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


def _timeline_message(
    words: str, who: str, channel: str, status: notification_pb2.NotificationStatus
) -> str:
    how = f" by {channel}" if channel else ""
    tail = f" (attempt {status.attempt}): {status.detail}" if status.detail else ""
    return f"{words} {who}{how}{tail}"


def now_iso(clock: Clock) -> str:
    value: datetime = clock.now()
    return value.isoformat()
