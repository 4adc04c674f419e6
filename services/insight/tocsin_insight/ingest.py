"""From Kafka to Postgres exactly once: a plain aiokafka consumer of incidents.events,
incidents.timeline, notifications.status and changes whose offsets live in Postgres, not
in Kafka.

Each poll becomes one :class:`~tocsin_insight.store.Batch`; its rows and the next offsets
of its partitions are written in one transaction. On assignment (start, rebalance) and when
another generation starts serving, the consumer seeks to the offsets that generation keeps
(the beginning when it keeps none), so a crash at any point resumes right after the last
committed batch. A record that cannot be decoded or folded becomes a dead letter (its bytes,
in Postgres in the same transaction, and on incidents.deadletter) and the service goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge, Histogram
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common.kafka import EventProducer
from tocsin_common.topics import (
    CHANGES,
    INCIDENTS_DEADLETTER,
    INCIDENTS_EVENTS,
    INCIDENTS_TIMELINE,
    NOTIFICATIONS_STATUS,
)

from tocsin_insight import facts
from tocsin_insight.facts import Directory, FactError
from tocsin_insight.store import Batch, DeadRecord, EventRecord, FactStore, Written

log = logging.getLogger("tocsin.insight.ingest")

TOPICS = (
    INCIDENTS_EVENTS.name,
    INCIDENTS_TIMELINE.name,
    NOTIFICATIONS_STATUS.name,
    CHANGES.name,
)
# Both carry an incident's timeline: correlation's events, and the entries that change no
# state (escalation's levels reached), folded alike.
_INCIDENT_TOPICS = frozenset({INCIDENTS_EVENTS.name, INCIDENTS_TIMELINE.name})

RECORDS = Counter("tocsin_insight_records_total", "Records written into facts, by topic", ["topic"])
DEAD = Counter("tocsin_insight_dead_letters_total", "Records insight could not use", ["topic"])
BATCH_SECONDS = Histogram(
    "tocsin_insight_batch_seconds",
    "Time to write one batch (rows and offsets, one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_SECONDS = Gauge(
    "tocsin_insight_event_lag_seconds", "Age of the newest incident event of the last batch"
)

HourClass = Callable[[datetime, str], str]


@dataclass
class Decoded:
    batch: Batch
    dead_records: list[ConsumerRecord[bytes, bytes]]


def decode(
    records: Iterable[ConsumerRecord[bytes, bytes]],
    directory: Directory,
    hour_class: HourClass | None = None,
) -> Decoded:
    """A batch from polled records (pure: the protobuf decoding and the per-record facts)."""
    batch = Batch()
    dead: list[ConsumerRecord[bytes, bytes]] = []
    for record in records:
        tp = (record.topic, record.partition)
        batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
        try:
            if record.value is None:
                raise FactError("value: empty record (a tombstone)")
            if record.topic in _INCIDENT_TOPICS:
                event = incident_pb2.IncidentEvent.FromString(record.value)
                if not event.event_id:
                    raise FactError("event_id: is empty")
                if not event.incident.incident_id:
                    raise FactError("incident.incident_id: is empty")
                if not event.HasField("at"):
                    raise FactError("at: is not set")
                batch.events.append(
                    EventRecord(event, record.topic, record.partition, record.offset)
                )
            elif record.topic == NOTIFICATIONS_STATUS.name:
                status = notification_pb2.NotificationStatus.FromString(record.value)
                if facts.is_page(status):
                    batch.notifications.append(
                        facts.notification_fact(status, directory, hour_class)
                    )
            elif record.topic == CHANGES.name:
                change = alert_pb2.ChangeEvent.FromString(record.value)
                batch.changes.append(facts.change_fact(change, directory))
            else:
                raise FactError(f"topic: {record.topic!r} is not one insight reads")
        except (DecodeError, FactError, ValueError) as error:
            reason = f"{type(error).__name__}: {error}"
            batch.dead.append(
                DeadRecord(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())},
                    reason,
                )
            )
            dead.append(record)
    return Decoded(batch, dead)


GenerationSource = Callable[[], Awaitable[str]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: FactConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: object) -> None:
        # Nothing to commit to Kafka: the last batch's offsets are already in Postgres (the
        # loop writes a batch before it polls again, and rebalances happen in the poll).
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        await self._owner.seek_to_stored(set(assigned))  # type: ignore[call-overload]
        self._owner.joined.set()


class FactConsumer:
    """The consume -> decode -> write loop of one insight process."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        store: FactStore,
        generation: GenerationSource,
        directory: Callable[[], Directory],
        producer: EventProducer | None,
        *,
        max_records: int = 2000,
        hour_class: HourClass | None = None,
        on_written: Callable[[str, Written], Awaitable[None]] | None = None,
        linger_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``linger_s``: once a poll brings records, how long to keep polling for more
        before the batch is written (0: write what the poll brought)."""
        self._consumer = consumer
        self._linger_s = linger_s
        self._monotonic = monotonic
        self._store = store
        self._generation_of = generation
        self._directory = directory
        self._producer = producer
        self._max_records = max_records
        self._hour_class = hour_class
        self._on_written = on_written
        self._generation = ""
        # Per partition, the next offset the generation is known to store (seeks, writes).
        self._stored: dict[TopicPartition, int] = {}
        self.joined = asyncio.Event()
        self.batches = 0

    @property
    def generation(self) -> str:
        return self._generation

    async def start(self, topics: Iterable[str] = TOPICS) -> None:
        """Join the consumer group on ``topics`` (positions come with each assignment)."""
        self._generation = await self._generation_of()
        await self._consumer.start()
        self._consumer.subscribe(topics=list(topics), listener=_Listener(self))

    async def start_assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Read ``partitions`` without a group (a replay), from the generation's offsets."""
        self._generation = await self._generation_of()
        await self._consumer.start()
        wanted = sorted(set(partitions))
        self._consumer.assign(wanted)
        await self.seek_to_stored(set(wanted))

    async def stop(self) -> None:
        await self._consumer.stop()

    async def seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        """Every partition in ``partitions`` at the offset the serving generation stored
        (its beginning when none is stored)."""
        if not partitions:
            return
        stored = await self._store.offsets(
            self._generation, [(tp.topic, tp.partition) for tp in partitions]
        )
        beginning: list[TopicPartition] = []
        for tp in sorted(partitions):
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                beginning.append(tp)
                self._stored.pop(tp, None)
            else:
                self._consumer.seek(tp, offset)
                self._stored[tp] = offset
        if beginning:
            await self._consumer.seek_to_beginning(*beginning)
        log.info(
            "positions from generation %s: %d partitions stored, %d from the beginning",
            self._generation,
            len(partitions) - len(beginning),
            len(beginning),
        )

    async def _follow_generation(self) -> None:
        current = await self._generation_of()
        if current != self._generation:
            log.info("generation %s serves now (was %s): seeking", current, self._generation)
            self._generation = current
            await self.seek_to_stored(set(self._consumer.assignment()))

    async def _positions(self) -> dict[tuple[str, int], int]:
        """Partitions whose consumer position is past what the generation stores: records
        the consumer skipped, not handed out (transaction markers, aborted transactions'
        records, records deleted by retention before the first fetch). Everything before the
        position was handed out by an earlier poll, already written, or by this one."""
        assigned = sorted(self._consumer.assignment())
        if not assigned:
            return {}

        async def position(tp: TopicPartition) -> int | None:
            try:
                return int(await asyncio.wait_for(self._consumer.position(tp), 5.0))
            except (IllegalStateError, TimeoutError):
                return None  # revoked meanwhile, or no position yet: a later poll

        found = await asyncio.gather(*(position(tp) for tp in assigned))
        return {
            (tp.topic, tp.partition): at
            for tp, at in zip(assigned, found, strict=True)
            if at is not None and at > self._stored.get(tp, -1)
        }

    async def poll_once(self, timeout_ms: int = 500) -> Written | None:
        """One poll and its batch written; None when the poll brought nothing and moved no
        partition's position."""
        await self._follow_generation()
        polled = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        records = [r for rs in polled.values() for r in rs]
        if records and self._linger_s > 0:
            records += await self._linger(len(records))
        positions = await self._positions()
        if not records:
            if not positions:
                return None
            # Only skipped records (a transaction's commit marker...): the positions alone,
            # so a generation can reach the end offsets it must reach to be complete.
            written = await self._store.write(self._generation, Batch(offsets=positions))
            self._remember(positions)
            if self._on_written is not None:
                await self._on_written(self._generation, written)
            return written
        decoded = decode(records, self._directory(), self._hour_class)
        for tp, at in positions.items():
            decoded.batch.offsets[tp] = max(decoded.batch.offsets.get(tp, 0), at)
        if decoded.dead_records and self._producer is not None:
            for record in decoded.dead_records:
                reason = next(
                    d.reason
                    for d in decoded.batch.dead
                    if (d.topic, d.partition, d.offset)
                    == (record.topic, record.partition, record.offset)
                )
                # On the dead-letter topic before the offsets move past it (a crash in
                # between sends it twice; Postgres keeps it once).
                await self._producer.dead_letter(INCIDENTS_DEADLETTER, record, reason)
        for dead in decoded.batch.dead:
            DEAD.labels(dead.topic).inc()
            log.warning(
                "dead letter: %s[%d]@%d: %s", dead.topic, dead.partition, dead.offset, dead.reason
            )
        started = time.perf_counter()
        written = await self._store.write(self._generation, decoded.batch)
        self._remember(decoded.batch.offsets)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        self.batches += 1
        for record in records:
            RECORDS.labels(record.topic).inc()
        if decoded.batch.events:
            newest = max(r.event.at.ToDatetime(tzinfo=UTC) for r in decoded.batch.events)
            LAG_SECONDS.set(max(0.0, (datetime.now(UTC) - newest).total_seconds()))
        if self._on_written is not None:
            await self._on_written(self._generation, written)
        return written

    async def _linger(self, have: int) -> list[ConsumerRecord[bytes, bytes]]:
        """The records that arrive within the linger after a poll brought `have`, up to
        the batch's size. Insight is off the paging path and its freshness target is
        seconds: at a steady trickle (one alert's records come from four topics at four
        moments) a transaction per poll cost PostgreSQL more CPU per page than any service
        on the path; one per linger costs a fraction."""
        more: list[ConsumerRecord[bytes, bytes]] = []
        deadline = self._monotonic() + self._linger_s
        while have + len(more) < self._max_records:
            left_ms = int((deadline - self._monotonic()) * 1000)
            if left_ms <= 0:
                break
            polled = await self._consumer.getmany(
                timeout_ms=left_ms, max_records=self._max_records - have - len(more)
            )
            more += [r for rs in polled.values() for r in rs]
        return more

    def _remember(self, offsets: dict[tuple[str, int], int]) -> None:
        for (topic, partition), at in offsets.items():
            tp = TopicPartition(topic, partition)
            self._stored[tp] = max(self._stored.get(tp, 0), at)

    async def run(self) -> None:
        while True:
            await self.poll_once()
