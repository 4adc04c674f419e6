"""Publishes normalized alerts and change events to Kafka, keyed by service (the
correlation partition). Each call returns once every record is durable (idempotent
producer, acks=all): only then may a sender be told 202."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from opentelemetry import trace
from tocsin.v1 import alert_pb2
from tocsin_common.kafka import EventProducer
from tocsin_common.topics import ALERTS_NORMALIZED, CHANGES, Topic
from tocsin_common.tracing import kafka_headers

MAX_KEY_HASHES = 4096
PARTITIONS_TTL_S = 5.0


class IngestProducer(EventProducer):
    """The common EventProducer (idempotent, acks=all), whose records skip the PRODUCER
    span when this process exports no spans (``traced`` false, see
    tocsin_common.tracing.setup_tracing): the span would be thrown away, and it cost more
    than the send. The current trace context (a sender's ``traceparent``) still goes into
    the record headers. The partition of a key is the default partitioner's (murmur2 of the
    key over the topic's partitions), its hash kept per key rather than computed again for
    every record."""

    def __init__(self, bootstrap: str, service: str, *, traced: bool, linger_ms: int = 2) -> None:
        super().__init__(bootstrap, service, linger_ms=linger_ms)
        self._traced = traced
        self._key_hashes: dict[bytes, int] = {}
        self._partitions: dict[str, tuple[float, list[int]]] = {}

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
        key_bytes = key.encode("utf-8")
        partition = await self._partition(topic.name, key_bytes)
        return await self._hand_over(
            topic.name, key_bytes, value, extra, partition, tracked=tracked
        )

    async def _partition(self, topic: str, key: bytes) -> int:
        """aiokafka's DefaultPartitioner choice, as it would make it in send(), over the
        topic's partitions as known at most PARTITIONS_TTL_S ago (the producer's own
        metadata may be minutes old)."""
        now = time.monotonic()
        known = self._partitions.get(topic)
        if known is None or now - known[0] > PARTITIONS_TTL_S:
            known = self._partitions[topic] = (
                now,
                list(await self._producer.partitions_for(topic)),  # known: no I/O
            )
        partitions = known[1]
        hashed = self._key_hashes.get(key)
        if hashed is None:
            if len(self._key_hashes) >= MAX_KEY_HASHES:  # keys are service ids: few
                self._key_hashes.clear()
            hashed = self._key_hashes[key] = murmur2(key) & 0x7FFFFFFF
        return int(partitions[hashed % len(partitions)])


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
