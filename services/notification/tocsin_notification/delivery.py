"""Delivery of notification requests: builds the pipeline's jobs from Kafka records and
gRPC test requests.

Contact data is looked up over gRPC from escalation at send time and kept a few seconds
(contacts.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord
from tocsin.v1 import notification_pb2
from tocsin_common.kafka import BadRecord

from tocsin_notification.automation import AutomationRunner
from tocsin_notification.pipeline import Job, Pipeline, Source
from tocsin_notification.subscribers import SubscriberDelivery, missing_fields

REQUIRED = ("idempotency_key", "user_id", "contact_method_id")
# An automation action (docs/automation.md) names no person.
REQUIRED_AUTOMATION = (
    "idempotency_key",
    "incident.incident_id",
    "automation.rule_id",
    "automation.url",
)


def parse(value: bytes) -> notification_pb2.NotificationRequest:
    """The request in a record, or BadRecord naming what is wrong."""
    request = notification_pb2.NotificationRequest()
    try:
        request.ParseFromString(value)
    except Exception as e:
        raise BadRecord(f"undecodable NotificationRequest: {e}") from None
    if request.HasField("status_notice"):
        missing = missing_fields(request)
        if missing:
            raise BadRecord(f"{', '.join(missing)}: missing")
        return request
    if request.HasField("automation"):
        for name in REQUIRED_AUTOMATION:
            holder, _, field = name.rpartition(".")
            if not getattr(getattr(request, holder) if holder else request, field):
                raise BadRecord(f"{name}: missing")
        return request
    for name in REQUIRED:
        if not getattr(request, name):
            raise BadRecord(f"{name}: missing")
    return request


class Deliverer:
    def __init__(
        self,
        pipeline: Pipeline,
        automation: AutomationRunner | None = None,
        subscribers: SubscriberDelivery | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.automation = automation
        self.subscribers = subscribers

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> list[asyncio.Future[Any]]:
        """Deliver one record's request; return the acknowledgements of the Kafka records
        its outcome was written as (the consumer awaits them before committing)."""
        request = parse(record.value or b"")
        source = Source(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key or b"",
            value=record.value or b"",
            headers={k: v for k, v in (record.headers or ())},
        )
        job = Job(request, source)
        if request.HasField("status_notice"):
            if self.subscribers is None:
                raise BadRecord("status_notice: this process delivers no status updates")
            await self.subscribers.handle(job)
        elif request.HasField("automation"):
            if self.automation is None:
                raise BadRecord("automation: this process runs no automation actions")
            await self.automation.handle(job)
        else:
            await self.pipeline.handle(job)
        return job.produced

    async def deliver(
        self, request: notification_pb2.NotificationRequest
    ) -> notification_pb2.NotificationStatus:
        job = Job(request)
        status = await self.pipeline.handle(job)
        await asyncio.gather(*job.produced)
        return status
