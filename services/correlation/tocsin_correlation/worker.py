"""The faust worker: agents over alerts.normalized and incidents.commands, state in tables.

Both input topics are keyed by service id with the same partition count, so one worker
owns a service's alerts and commands, applied in order, and its tables' partitions.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from faust.types import StreamT
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common import metrics
from tocsin_common.config import ConfigStore
from tocsin_common.faustapp import make_app, raw_topic
from tocsin_common.settings import Settings
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import (
    ALERTS_DEADLETTER,
    ALERTS_NORMALIZED,
    INCIDENTS_COMMANDS,
    INCIDENTS_EVENTS,
    Topic,
)
from tocsin_common.tracing import consume_span, kafka_headers, produce_span, record_error, tracer

from tocsin_correlation.engine import CorrelationEngine, Outcome

log = logging.getLogger("tocsin.correlation")
SERVICE = "correlation"


class CorrelationWorker:
    def __init__(self, settings: Settings, config: ConfigStore) -> None:
        self.config = config
        self.app = make_app(settings, "tocsin-correlation")
        partitions = ALERTS_NORMALIZED.partitions
        self.alerts_table = self.app.Table("alerts", default=None, partitions=partitions)
        self.incidents_table = self.app.Table("incidents", default=None, partitions=partitions)
        self.groups_table = self.app.Table("groups", default=None, partitions=partitions)
        self.engine = CorrelationEngine(self.alerts_table, self.incidents_table, self.groups_table)
        self.alerts_topic = raw_topic(self.app, ALERTS_NORMALIZED)
        self.commands_topic = raw_topic(self.app, INCIDENTS_COMMANDS)
        self.events_topic = raw_topic(self.app, INCIDENTS_EVENTS)
        self.dead_letters = raw_topic(self.app, ALERTS_DEADLETTER)
        self._tracer = tracer("tocsin.correlation")
        self.table_names = ("alerts", "incidents", "groups")
        self.app.agent(self.alerts_topic, name="correlate-alerts")(self._alerts_agent)
        self.app.agent(self.commands_topic, name="apply-commands")(self._commands_agent)

    def changelog_topics(self) -> list[Topic]:
        """The tables' changelog topics, co-partitioned with the source topics.

        Created before faust starts: on a fresh broker faust creates them itself, but its
        first events can then meet metadata that still shows no partitions for them.
        """
        return [
            Topic(
                f"{self.app.conf.id}-{name}-changelog",
                ALERTS_NORMALIZED.partitions,
                "table key",
                "faust table entry",
                compacted=True,
            )
            for name in self.table_names
        ]

    async def _alerts_agent(self, stream: StreamT[Any]) -> None:
        async for event in stream.events():
            with consume_span(self._tracer, ALERTS_NORMALIZED.name, _headers(event)) as span:
                try:
                    alert = alert_pb2.Alert()
                    alert.ParseFromString(event.value)
                    outcome = self.engine.on_alert(alert, self.config.current, time.time())
                    await self._publish(outcome, ALERTS_NORMALIZED.name)
                except Exception as error:
                    record_error(span, error)
                    await self._dead_letter(event, error)

    async def _commands_agent(self, stream: StreamT[Any]) -> None:
        async for event in stream.events():
            with consume_span(self._tracer, INCIDENTS_COMMANDS.name, _headers(event)) as span:
                try:
                    command = incident_pb2.IncidentCommand()
                    command.ParseFromString(event.value)
                    outcome = self.engine.on_command(command, time.time())
                    await self._publish(outcome, INCIDENTS_COMMANDS.name)
                except Exception as error:
                    record_error(span, error)
                    await self._dead_letter(event, error)

    async def _dead_letter(self, event: Any, error: Exception) -> None:
        """Keep a record that failed, whole, with why; the partition keeps moving."""
        message = event.message
        log.exception(
            "record failed; dead-lettered",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        letter = alert_pb2.DeadLetter(
            reason=f"{type(error).__name__}: {error}",
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            original_key=event.key or b"",
            original_value=event.value or b"",
            original_headers=dict(_headers(event) or {}),
            failed_service=SERVICE,
        )
        set_timestamp(letter.failed_at, datetime.now(UTC))
        await self.dead_letters.send(key=event.key, value=letter.SerializeToString())
        metrics.DEAD_LETTERS.labels(SERVICE, message.topic, type(error).__name__).inc()

    async def _publish(self, outcome: Outcome, source: str) -> None:
        metrics.MESSAGES_CONSUMED.labels(SERVICE, source).inc()
        if outcome.dropped:
            log.info("input changed nothing", extra={"reason": outcome.dropped})
        for incident_event in outcome.events:
            with produce_span(self._tracer, INCIDENTS_EVENTS.name):
                await self.events_topic.send(
                    key=incident_event.incident.incident_id.encode(),
                    value=incident_event.SerializeToString(),
                    headers=kafka_headers(),
                )
            metrics.MESSAGES_PRODUCED.labels(SERVICE, INCIDENTS_EVENTS.name).inc()


def _headers(event: Any) -> Any:
    headers = event.headers
    if not headers:
        return None
    return dict(headers) if not isinstance(headers, dict) else headers
