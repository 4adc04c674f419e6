"""Publishes normalized alerts to Kafka, keyed by service (the correlation partition)."""

from __future__ import annotations

from tocsin.v1 import alert_pb2
from tocsin_common.kafka import EventProducer
from tocsin_common.topics import ALERTS_NORMALIZED


class AlertPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def publish(self, alert: alert_pb2.Alert) -> None:
        """Return once the alert is durable on Kafka (idempotent producer, acks=all)."""
        await self._producer.send(ALERTS_NORMALIZED, alert.service_id, alert)
