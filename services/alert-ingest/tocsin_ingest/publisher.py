"""Publishes normalized alerts and change events to Kafka, keyed by service (the
correlation partition). Each call returns once every record is durable (idempotent
producer, acks=all): only then may a sender be told 202."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from opentelemetry import trace
from tocsin.v1 import alert_pb2
from tocsin_common.kafka import EventProducer
from tocsin_common.topics import ALERTS_NORMALIZED, CHANGES, Topic
from tocsin_common.tracing import kafka_headers


class IngestProducer(EventProducer):
    """The common EventProducer (idempotent, acks=all), whose records skip the PRODUCER
    span when this process exports no spans (``traced`` false, see
    tocsin_common.tracing.setup_tracing): the span would be thrown away, and it cost more
    than the send. The current trace context (a sender's ``traceparent``) still goes into
    the record headers."""

    def __init__(self, bootstrap: str, service: str, *, traced: bool, linger_ms: int = 0) -> None:
        super().__init__(bootstrap, service, linger_ms=linger_ms)
        self._traced = traced

    async def _enqueue(
        self,
        topic: Topic,
        key: str,
        message: Message | bytes,
        headers: Iterable[tuple[str, bytes]],
        *,
        tracked: bool,
    ) -> asyncio.Future[RecordMetadata]:
        if self._traced:
            return await super()._enqueue(topic, key, message, headers, tracked=tracked)
        value = message if isinstance(message, bytes) else message.SerializeToString()
        extra = list(headers)
        if extra or trace.get_current_span().get_span_context().is_valid:
            extra = kafka_headers(extra)
        return await self._hand_over(
            topic.name, key.encode("utf-8"), value, extra, None, tracked=tracked
        )


class AlertPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def publish(self, alert: alert_pb2.Alert) -> None:
        """Return once the alert is durable on Kafka (idempotent producer, acks=all)."""
        await self._producer.send(ALERTS_NORMALIZED, alert.service_id, alert)

    async def publish_all(self, alerts: Sequence[alert_pb2.Alert]) -> None:
        """Enqueue every alert, then wait for all: one batch, durable when this returns."""
        if len(alerts) == 1:
            await self.publish(alerts[0])
            return
        futures = [await self._producer.enqueue(ALERTS_NORMALIZED, a.service_id, a) for a in alerts]
        await asyncio.gather(*futures)

    async def hand_over(self, alerts: Sequence[alert_pb2.Alert]) -> None:
        """Give the alerts to the producer without waiting for the broker: for a consumer
        loop, which flushes the producer before it commits the input's offset (so they are
        durable before the input counts as done), and so can keep many in flight."""
        for alert in alerts:
            await self._producer.enqueue(ALERTS_NORMALIZED, alert.service_id, alert)

    async def publish_change(self, change: alert_pb2.ChangeEvent) -> None:
        await self._producer.send(CHANGES, change.service_id, change)
