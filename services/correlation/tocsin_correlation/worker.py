"""The faust worker: agents over alerts.normalized, incidents.commands and changes, state
in tables; a background task keeps the silence snapshot fresh and releases held incidents.

The input topics are keyed by service id with the same partition count, so one worker owns
a service's alerts, commands and changes, applied in order, and its tables' partitions.
What crosses partitions goes through Redis:
- ``tocsin:silences`` (written by the SilenceService), read into a snapshot every second;
- ``tocsin:correlation:open:<service>`` hash incident id -> created_at: the open incidents
  of every service some other service depends on (written here on each of their events);
- ``tocsin:correlation:changes:<service>`` sorted set of ChangeEvent bytes by time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter
from redis.asyncio import Redis
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common import metrics
from tocsin_common.config import ConfigStore, TocsinConfig
from tocsin_common.faustapp import make_app, raw_topic
from tocsin_common.settings import Settings
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import (
    ALERTS_DEADLETTER,
    ALERTS_NORMALIZED,
    CHANGES,
    INCIDENTS_COMMANDS,
    INCIDENTS_EVENTS,
    Topic,
)
from tocsin_common.tracing import consume_span, kafka_headers, produce_span, record_error, tracer

from tocsin_correlation.changes import ChangeRecord
from tocsin_correlation.engine import CorrelationEngine, OpenIncident, Outcome, View
from tocsin_correlation.silence_api import load_silences
from tocsin_correlation.silences import Silence

log = logging.getLogger("tocsin.correlation")
SERVICE = "correlation"

DROPPED = Counter(
    "tocsin_correlation_dropped_total",
    "Inputs that changed nothing (e.g. acknowledge/resolve of an unknown dedup key), by reason",
    ["reason"],
)
SUPPRESSED = Counter(
    "tocsin_correlation_suppressed_total",
    "New alerts recorded as suppressed, by cause (maintenance, silence, inhibition)",
    ["kind"],
)
OPEN_KEY = "tocsin:correlation:open:"
CHANGES_KEY = "tocsin:correlation:changes:"
REFRESH_SECONDS = 1.0
DEFAULT_CHANGE_RETENTION = 24 * 3600.0
TABLES = ("alerts", "incidents", "groups", "held", "sources", "changes")


class CorrelationWorker:
    def __init__(self, settings: Settings, config: ConfigStore, **app_options: Any) -> None:
        self.config = config
        self.redis_url = settings.redis_url
        self.change_retention = float(
            os.environ.get("TOCSIN_CHANGE_RETENTION_SECONDS", DEFAULT_CHANGE_RETENTION)
        )
        self.app = make_app(settings, "tocsin-correlation", **app_options)
        partitions = ALERTS_NORMALIZED.partitions
        self.tables = {
            name: self.app.Table(name, default=None, partitions=partitions) for name in TABLES
        }
        self.engine = CorrelationEngine(*(self.tables[name] for name in TABLES))
        self.alerts_topic = raw_topic(self.app, ALERTS_NORMALIZED)
        self.commands_topic = raw_topic(self.app, INCIDENTS_COMMANDS)
        self.changes_topic = raw_topic(self.app, CHANGES)
        self.events_topic = raw_topic(self.app, INCIDENTS_EVENTS)
        self.dead_letters = raw_topic(self.app, ALERTS_DEADLETTER)
        self._tracer = tracer("tocsin.correlation")
        self.table_names = TABLES
        self.silences: list[Silence] = []
        self._redis: Redis | None = None
        self._upstreams: tuple[int, frozenset[str]] = (0, frozenset())
        self.app.agent(self.alerts_topic, name="correlate-alerts")(self._alerts_agent)
        self.app.agent(self.commands_topic, name="apply-commands")(self._commands_agent)
        self.app.agent(self.changes_topic, name="keep-changes")(self._changes_agent)
        self.app.task(self._refresher)

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

    def redis(self) -> Redis:
        if self._redis is None:  # created on the worker's loop, used only there
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    def _upstream_services(self, config: TocsinConfig) -> frozenset[str]:
        """Services some other service depends on: their open incidents are indexed."""
        if self._upstreams[0] != id(config):
            names = frozenset(s for svc in config.services for s in svc.depends_on)
            self._upstreams = (id(config), names)
        return self._upstreams[1]

    # --- agents ---------------------------------------------------------------------

    async def _alerts_agent(self, stream: StreamT[Any]) -> None:
        async for event in stream.events():
            with consume_span(self._tracer, ALERTS_NORMALIZED.name, _headers(event)) as span:
                try:
                    alert = alert_pb2.Alert()
                    alert.ParseFromString(event.value)
                    config = self.config.current
                    now = time.time()
                    view = await self._view(alert, config, now)
                    outcome = self.engine.on_alert(alert, config, now, view)
                    await self._publish(outcome, ALERTS_NORMALIZED.name, config)
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
                    await self._publish(outcome, INCIDENTS_COMMANDS.name, self.config.current)
                except Exception as error:
                    record_error(span, error)
                    await self._dead_letter(event, error)

    async def _changes_agent(self, stream: StreamT[Any]) -> None:
        async for event in stream.events():
            with consume_span(self._tracer, CHANGES.name, _headers(event)) as span:
                try:
                    change = alert_pb2.ChangeEvent()
                    change.ParseFromString(event.value)
                    now = time.time()
                    record = self.engine.on_change(change, now, self.change_retention)
                    key = CHANGES_KEY + record.service_id
                    async with self.redis().pipeline(transaction=False) as pipe:
                        pipe.zadd(key, {record.raw: record.at})
                        pipe.zremrangebyscore(key, "-inf", now - self.change_retention)
                        pipe.expire(key, int(self.change_retention) + 60)
                        await pipe.execute()
                    metrics.MESSAGES_CONSUMED.labels(SERVICE, CHANGES.name).inc()
                except Exception as error:
                    record_error(span, error)
                    await self._dead_letter(event, error)

    async def _view(self, alert: alert_pb2.Alert, config: TocsinConfig, now: float) -> View:
        """Silences, and for a trigger on a service with dependencies, the open incidents
        and recent changes of its upstream services (which other partitions own)."""
        if alert.action != alert_pb2.ALERT_ACTION_TRIGGER:
            return View(self.silences)
        try:
            upstream = config.upstream(alert.service_id)
            lookback = config.service(alert.service_id).change_lookback.total_seconds()
        except KeyError:
            return View(self.silences)
        if not upstream:
            return View(self.silences)
        async with self.redis().pipeline(transaction=False) as pipe:
            for service in upstream:
                pipe.hgetall(OPEN_KEY + service)
            for service in upstream:
                pipe.zrangebyscore(CHANGES_KEY + service, now - lookback, "+inf")
            replies = await pipe.execute()
        open_incidents = {
            service: [OpenIncident(_text(k), float(v)) for k, v in replies[i].items()]
            for i, service in enumerate(upstream)
        }
        changes: list[ChangeRecord] = []
        for raw in (r for reply in replies[len(upstream) :] for r in reply):
            change = alert_pb2.ChangeEvent()
            change.ParseFromString(raw)
            changes.append(ChangeRecord.from_event(change, now))
        return View(self.silences, open_incidents, changes)

    # --- background -----------------------------------------------------------------

    async def _refresher(self) -> None:
        """Every second: reload silences; release held incidents whose holder resolved."""
        while True:
            try:
                now = time.time()
                self.silences = [s for s in await load_silences(self.redis()) if s.ends_at > now]
                await self._release_held()
            except Exception:
                log.exception("refresh failed; retrying")
            await asyncio.sleep(REFRESH_SECONDS)

    async def _release_held(self) -> None:
        held = [(k, v) for k, v in list(self.tables["held"].items()) if v]
        if not held:
            return
        async with self.redis().pipeline(transaction=False) as pipe:
            for _, entry in held:
                pipe.hexists(OPEN_KEY + entry["holder_service"], entry["holder"])
            still_open = await pipe.execute()
        for (incident_id, entry), is_open in zip(held, still_open, strict=True):
            if is_open:
                continue
            command = self.engine.held_release_command(incident_id, entry)
            await self.commands_topic.send(
                key=command.service_id.encode(),
                value=command.SerializeToString(),
                headers=kafka_headers(),
            )
            metrics.MESSAGES_PRODUCED.labels(SERVICE, INCIDENTS_COMMANDS.name).inc()

    # --- output ---------------------------------------------------------------------

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
        await self.dead_letters.send(key=event.key, value=letter.SerializeToString(), force=True)
        metrics.DEAD_LETTERS.labels(SERVICE, message.topic, type(error).__name__).inc()

    async def _publish(self, outcome: Outcome, source: str, config: TocsinConfig) -> None:
        metrics.MESSAGES_CONSUMED.labels(SERVICE, source).inc()
        if outcome.dropped:
            DROPPED.labels(outcome.dropped).inc()
            log.info("input changed nothing", extra={"reason": outcome.dropped})
        if outcome.suppressed:
            SUPPRESSED.labels(outcome.suppressed).inc()
        await self._index(outcome, config)
        for incident_event in outcome.events:
            with produce_span(self._tracer, INCIDENTS_EVENTS.name):
                # force: hand it to the producer now, not as an attachment published
                # when the input is acked — faust may commit the input's offset between
                # that ack and the attachment's send, and a crash there loses the event.
                # Handed over now, the commit's producer flush makes it durable first.
                await self.events_topic.send(
                    key=incident_event.incident.incident_id.encode(),
                    value=incident_event.SerializeToString(),
                    headers=kafka_headers(),
                    force=True,
                )
            metrics.MESSAGES_PRODUCED.labels(SERVICE, INCIDENTS_EVENTS.name).inc()

    async def _index(self, outcome: Outcome, config: TocsinConfig) -> None:
        """Keep the open-incident index of upstream services (idempotent: a replay after a
        crash writes the same entries again)."""
        upstream = self._upstream_services(config)
        mine = [e.incident for e in outcome.events if e.incident.service_id in upstream]
        if not mine:
            return
        async with self.redis().pipeline(transaction=False) as pipe:
            for incident in mine:
                key = OPEN_KEY + incident.service_id
                if incident.status == incident_pb2.INCIDENT_STATUS_RESOLVED:
                    pipe.hdel(key, incident.incident_id)
                else:
                    pipe.hset(key, incident.incident_id, incident.created_at.ToNanoseconds() / 1e9)
            await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _headers(event: Any) -> Any:
    headers = event.headers
    if not headers:
        return None
    return dict(headers) if not isinstance(headers, dict) else headers
