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
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.serializers.codecs import get_codec
from faust.types import ProcessingGuarantee, StreamT
from faust.utils import json as faust_json
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common import metrics
from tocsin_common.config import ConfigStore, TocsinConfig
from tocsin_common.deadletter import dead_letter as build_dead_letter
from tocsin_common.faustapp import deliver_directly, make_app
from tocsin_common.kafka import EventProducer, KeyPartitioner, client_options
from tocsin_common.limits import purgeable_silences
from tocsin_common.redisclient import redis_client
from tocsin_common.settings import Settings
from tocsin_common.topics import (
    ALERTS_DEADLETTER,
    ALERTS_NORMALIZED,
    CHANGES,
    CORRELATION_GROUP,
    INCIDENTS_COMMANDS,
    INCIDENTS_EVENTS,
    Topic,
)
from tocsin_common.tracing import (
    consume_span,
    forwarded_kafka_headers,
    kafka_headers,
    produce_span,
    record_error,
    spans_exported,
    tracer,
)
from tocsin_common.transport import KafkaSecurity

from tocsin_correlation.changes import ChangeRecord
from tocsin_correlation.engine import (
    CorrelationEngine,
    OpenIncident,
    Outcome,
    View,
    service_of,
    upstream_of,
)
from tocsin_correlation.gaps import KnownOffsets, judge, reread_again_from
from tocsin_correlation.silence_api import load_silences, purge_silences
from tocsin_correlation.silences import Silence
from tocsin_correlation.staging import Journal, StagedMapping

log = logging.getLogger("tocsin.correlation")
SERVICE = "correlation"

DROPPED = Counter(
    "tocsin_correlation_dropped_total",
    "Inputs that changed nothing (e.g. acknowledge/resolve of an unknown dedup key), by reason",
    ["reason"],
)
SKIPPED = Counter(
    "tocsin_correlation_skipped_offsets_total",
    "Offsets the consumer jumped over within a partition (records never seen by the agent)",
    ["topic"],
)
REREADS = Counter(
    "tocsin_correlation_rereads_total",
    "Seeks back to read again records the consumer skipped",
    ["topic"],
)
GAPS_ACCEPTED = Counter(
    "tocsin_correlation_offset_gaps_accepted_total",
    "Offset gaps moved over because the broker has no record there (transaction markers, "
    "records deleted by retention or compaction)",
    ["topic"],
)
BATCH_SIZE = Histogram(
    "tocsin_correlation_batch_inputs",
    "Inputs processed per batch (one Kafka acknowledgement wait each)",
    buckets=(1, 5, 20, 50, 100, 200, 500, 1000),
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
# A batch is what the agent takes at once: what the consumer has delivered, up to
# BATCH_MAX inputs. One Kafka acknowledgement wait per batch instead of per input. Under
# load (the batch before had BATCH_LINGER_FROM inputs or more) a batch that is not full
# lingers BATCH_WITHIN_S for more; at a low rate no input waits for company.
BATCH_MAX = int(os.environ.get("TOCSIN_CORRELATION_BATCH_MAX", "500"))
BATCH_WITHIN_S = float(os.environ.get("TOCSIN_CORRELATION_BATCH_WITHIN_S", "0.005"))
BATCH_LINGER_FROM = int(os.environ.get("TOCSIN_CORRELATION_BATCH_LINGER_FROM", "50"))
BATCH_FINISH_ON_STOP_S = 10.0
REREAD_AGAIN_S = 5.0
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# Failures of the stores and the broker: retried in place. Anything else an input raises
# is about the input: it is dead-lettered.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
    KafkaError,
    ProducerSendError,
)


@dataclass
class Output:
    """A record to publish, prepared (headers included) inside the span of its input, or
    a changelog record of a batch."""

    topic: str
    key: bytes
    value: bytes | None  # None: a changelog tombstone
    headers: list[tuple[str, bytes]]
    partition: int | None = None  # None: by key


@dataclass
class Batch:
    """The staged writes and the outputs of the inputs taken at once, and the engine over
    them."""

    tables: Mapping[str, Any]
    # The batch before, while its writes are not yet in the tables: read through.
    over: Batch | None = None
    journal: Journal = field(init=False, default_factory=Journal)
    views: dict[str, StagedMapping] = field(init=False)
    engine: CorrelationEngine = field(init=False)
    partitions: dict[str, dict[str, int]] = field(init=False)
    outputs: list[Output] = field(default_factory=list)
    # inputs processed, by topic: counted once a batch (a metric's lock per input cost
    # more than counting here)
    consumed: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        over = self.over
        self.views = {
            name: StagedMapping(self._store(name) if over is None else over.views[name])
            for name in self.tables
        }
        for view in self.views.values():
            view.journal = self.journal
        self.over = None  # only its views are read
        self.engine = CorrelationEngine(*(self.views[name] for name in TABLES))
        self.partitions = {name: {} for name in self.tables}
        self._names = {id(view): name for name, view in self.views.items()}

    def _store(self, name: str) -> Any:
        # Each table's store (table.data), not the faust Table: a Table read also calls
        # faust's sensors, and the worker keeps the writes in the store itself.
        table = self.tables[name]
        return getattr(table, "data", table)

    def read_tables(self) -> None:
        """The batch this one was read over is in the tables now: read them directly (so
        that batches do not chain)."""
        for name, view in self.views.items():
            view.base = self._store(name)

    def start_input(self) -> None:
        """An input begins: its writes can be undone until it is kept."""
        self.journal.start()

    def drop_input(self) -> None:
        """The input failed: its writes are undone, the batch's stay."""
        self.journal.undo()

    def keep_input(self, partition: int, outputs: list[Output]) -> None:
        """The input succeeded: its writes stay (in its partition's changelog)."""
        names = self._names
        partitions = self.partitions
        for view, key, _ in self.journal.entries:
            partitions[names[id(view)]][key] = partition
        self.journal.start()
        self.outputs.extend(outputs)


@dataclass
class Pending:
    """A batch whose events and state are being made durable (then its inputs acked)."""

    batch: Batch
    # its events are durable and its writes in the tables; its changelog records handed
    # over (with the next batch's events when those were waiting: `follower`)
    kept: asyncio.Future[None] = field(default_factory=lambda: _future())
    # its changelog records are durable too, and its inputs acked
    done: asyncio.Future[None] = field(default_factory=lambda: _future())
    # the next batch's records, waiting to be handed over with this batch's changelog
    # records (one produce request), and where their sends are given back
    follower: list[Output] | None = None
    follower_sent: asyncio.Future[Submitted | None] | None = None
    finishing: asyncio.Future[None] | None = None  # its _finish (referenced while it runs)


def _future() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # a failure is raised to whoever waits on it; nobody may (the agent is stopping)
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def batch_linger(
    previous: int, taken: int, within_s: float, linger_from: int, batch_max: int
) -> float:
    """How long a batch of `taken` inputs waits for more (pure): `within_s` when the batch
    before had at least `linger_from` inputs (a backlog, or a rate where waiting a little
    fills a batch and saves acknowledgement waits) and this one is not full; otherwise
    not at all, so that at a low rate an input is processed as soon as it arrives."""
    if within_s <= 0 or taken >= batch_max or previous < linger_from:
        return 0.0
    return within_s


class CorrelationWorker:
    _last_batch = 0  # inputs in the batch taken before (batch_linger)

    def __init__(self, settings: Settings, config: ConfigStore, **app_options: Any) -> None:
        self.config = config
        self.redis_url = settings.redis_url
        self.redis_connection = settings.redis
        self.kafka_security = settings.kafka_security
        self.change_retention = float(
            os.environ.get("TOCSIN_CHANGE_RETENTION_SECONDS", DEFAULT_CHANGE_RETENTION)
        )
        # The consumer group and the changelog topics are named after it.
        app_id = os.environ.get("TOCSIN_CORRELATION_APP_ID", CORRELATION_GROUP.group_id)
        self.app = make_app(settings, app_id, **app_options)
        # Co-partitioned with its inputs (tocsin_common.topics.CO_PARTITIONED), which the
        # same setting sized; __main__ refuses to start when the broker's counts differ.
        self.partition_count = partitions = settings.kafka_partitions
        self.tables = {
            name: self.app.Table(name, default=None, partitions=partitions) for name in TABLES
        }
        self.engine = CorrelationEngine(*(self.tables[name] for name in TABLES))
        # One agent over the three inputs: they share the service's state, and staged
        # batches (staging.py) need one writer.
        self.inputs_topic = self.app.topic(
            ALERTS_NORMALIZED.name,
            INCIDENTS_COMMANDS.name,
            CHANGES.name,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.bootstrap = settings.kafka_bootstrap
        self._producer: EventProducer | None = None
        self._batch_sender: BatchSender | None = None
        self._tracer = tracer("tocsin.correlation")
        self._spans = spans_exported()
        self._consumed_counters: dict[str, Any] = {}
        self._changelog_codecs: dict[str, tuple[str, Dump, Dump]] = {}
        self.table_names = TABLES
        self.silences: list[Silence] = []
        self._redis: Redis | None = None
        self._upstreams: tuple[int, frozenset[str]] = (0, frozenset())
        self.app.agent(self.inputs_topic, name="correlate")(self._agent)
        self._next_offset: dict[Any, int] = {}  # topic-partition -> next offset to process
        # topic-partition -> (offset sought back to, when): set aside events until it comes
        self._rereading: dict[Any, tuple[int, float]] = {}
        # topic-partition -> the offsets the broker had in the last read from a gap
        self._known_offsets: dict[Any, KnownOffsets] = {}
        self._offset_probe: OffsetProbe | None = None
        self.app.on_partitions_assigned.connect(self._on_rebalance)
        self.app.on_partitions_revoked.connect(self._on_rebalance)
        self.app.task(self._refresher)

    def changelog_topics(self) -> list[Topic]:
        """The tables' changelog topics, co-partitioned with the source topics.

        Created before faust starts: on a fresh broker faust creates them itself, but its
        first events can then meet metadata that still shows no partitions for them.
        """
        return [
            Topic(
                f"{self.app.conf.id}-{name}-changelog",
                self.partition_count,
                "table key",
                "faust table entry",
                compacted=True,
            )
            for name in self.table_names
        ]

    def redis(self) -> Redis:
        if self._redis is None:  # created on the worker's loop, used only there
            self._redis = redis_client(self.redis_connection)
        return self._redis

    def _upstream_services(self, config: TocsinConfig) -> frozenset[str]:
        """Services some other service depends on: their open incidents are indexed."""
        if self._upstreams[0] != id(config):
            names = frozenset(s for svc in config.services for s in svc.depends_on)
            self._upstreams = (id(config), names)
        return self._upstreams[1]

    # --- the agent ------------------------------------------------------------------

    async def _agent(self, stream: StreamT[Any]) -> None:
        """Alerts, commands and changes of the worker's partitions, in batches.

        The records are handed by the consumer straight to the stream's channel queue
        (faustapp.deliver_directly: no decode, no Event) and taken from it here, not through
        faust's stream iteration: that costs an event-loop round and a pass through
        processors and sensors per event, and take_events then waits a fixed time per
        batch. A batch is whatever arrived while the previous one was processed (at least
        one record, at most BATCH_MAX): one record at low load, big batches — so few Kafka
        acknowledgement waits — under a backlog.

        A batch is processed while the one before is being made durable (_step): the
        worker computes instead of waiting on Kafka's acknowledgements.
        """
        channel: Any = stream.channel  # the topic iterator the consumer delivers to
        deliver_directly(self.app, channel)
        queue = channel.queue
        pending: Pending | None = None
        try:
            while True:
                try:
                    records = await self._take(queue)
                except StopAsyncIteration:
                    # faust's way of stopping an agent: thrown into the channel it reads
                    # (its stream iteration ends quietly on it; so does this).
                    return
                if not records:
                    continue
                step = asyncio.ensure_future(self._step(records, pending))
                try:
                    pending = await asyncio.shield(step)
                except asyncio.CancelledError:
                    # faust commits acked offsets when it stops: finish the batch first
                    # (below). One that cannot finish (Kafka gone) must not be committed:
                    # leave as a crash would, so its inputs are read again.
                    await asyncio.wait([step], timeout=BATCH_FINISH_ON_STOP_S)
                    if not step.done() or step.exception() is not None:
                        log.critical("stopping in the middle of a batch; exiting without commit")
                        os._exit(70)
                    pending = step.result()
                    raise
                # An exception of a batch (not a broker or store failure: those are retried
                # in place; not an input's: those are dead-lettered) crashes the agent with
                # nothing of that batch or the next acked, so they cannot be committed.
        finally:
            if pending is not None and not pending.done.done():
                # Stopping (or crashing on a later batch): the batch in flight is still
                # made durable and acked, or the process leaves without a commit.
                await asyncio.wait([pending.done], timeout=BATCH_FINISH_ON_STOP_S)
                if not pending.done.done() or pending.done.exception() is not None:
                    log.critical("stopping in the middle of a batch; exiting without commit")
                    os._exit(70)

    async def _step(self, records: Sequence[Any], previous: Pending | None) -> Pending:
        """Run the engine over a batch on staged state — over the previous batch's writes
        while that one is still being made durable — then, once the previous batch's
        events are durable and its writes kept, send this one's events and start making it
        durable (returned, running).

        This batch's events go out in the same produce request as the previous batch's
        changelog records when they are ready before those are handed over (one round
        trip for both, not one after the other's acknowledgement): a changelog record is
        still sent only once the events of the inputs that wrote it are durable, events
        are never overtaken (a batch's events go out once the previous batch's are
        acknowledged), and a batch's changelog records go out only once the previous
        batch's are durable (_finish), so every topic receives its records in the order of
        the inputs.
        """
        ahead = previous is not None and not previous.kept.done()
        over = previous.batch if previous is not None and ahead else None
        batch = Batch(self.tables, over)
        config = self.config.current
        inputs = await self._in_order(records)
        BATCH_SIZE.observe(len(inputs))
        for record in inputs:
            await self._process_input(batch, record, config)
        for topic, count in batch.consumed.items():
            self._consumed(topic).inc(count)
        submitted: Submitted | None
        if previous is not None and not previous.kept.done():
            # handed over by the previous batch's _finish, with its changelog records;
            # its failure is this batch's: nothing further is sent
            sent: asyncio.Future[Submitted | None] = asyncio.get_running_loop().create_future()
            previous.follower, previous.follower_sent = batch.outputs, sent
            submitted = await sent
        else:
            if previous is not None:
                previous.kept.result()  # its failure is this batch's (raised)
            submitted = await self._submit(batch.outputs)
        if over is not None:
            batch.read_tables()
        pending = Pending(batch)
        pending.finishing = asyncio.ensure_future(
            self._finish(pending, records, submitted, previous)
        )
        pending.finishing.add_done_callback(functools.partial(_settle, pending))
        return pending

    async def _take(self, queue: Any) -> list[Any]:
        """The next batch of records (faust Messages): wait for one, then take every one
        already delivered, up to BATCH_MAX — lingering BATCH_WITHIN_S for more only under
        load (batch_linger).

        Records the consumer hands over from before the last rebalance, or while the flow
        is suspended (rebalancing, recovering tables), are left out and never acked, as
        faust's stream skips them (faustapp.py): they are fetched again after the seek.
        """
        records: list[Any] = []
        first = await queue.get()
        self._take_into(records, first)
        self._drain(queue, records)
        linger = batch_linger(
            self._last_batch, len(records), BATCH_WITHIN_S, BATCH_LINGER_FROM, BATCH_MAX
        )
        if linger > 0:
            await asyncio.sleep(linger)
            self._drain(queue, records)
        self._last_batch = len(records)
        # faust's consumer warns that a stream stalled when this is not kept up.
        monitor = self.app.monitor
        if monitor is not None and records:
            inbound = monitor.stream_inbound_time
            now = time.monotonic()
            for record in records:
                inbound[record.tp] = now
        return records

    def _drain(self, queue: Any, records: list[Any]) -> None:
        while len(records) < BATCH_MAX:
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._take_into(records, record)

    def _take_into(self, records: list[Any], record: Any) -> None:
        app = self.app
        if not app.flow_control.is_active() or record.generation_id != app.consumer_generation_id:
            return
        records.append(record)

    def _ack(self, records: Sequence[Any]) -> None:
        """The batch is done (its events durable, its state kept): its offsets may be
        committed."""
        ack = self.app.consumer.ack  # each record was handed over once: no reference count
        for record in records:
            ack(record)

    async def _finish(
        self,
        pending: Pending,
        records: Sequence[Any],
        submitted: Submitted | None,
        previous: Pending | None,
    ) -> None:
        """Make a batch durable: its events acknowledged by Kafka (acks=all), then its state
        kept (see staging.py for why in this order) — its changelog records sent once the
        previous batch's are durable, with the next batch's events if those wait — then
        its inputs acked. A re-send repeats event ids, which every consumer of
        incidents.events applies once."""
        batch = pending.batch
        # Prepared while the batch's events are on their way: nothing is applied or sent.
        changelogs = self._changelog_records(batch)
        await self._send_durably(batch.outputs, "the batch's events", submitted)
        if previous is not None:
            await previous.done  # its changelog records first (a compacted topic's order)
        self._apply(batch)
        # Handed over together, with no await that yields in between: one produce request.
        sending = await self._submit(changelogs)
        follower, follower_sent = pending.follower, pending.follower_sent
        if follower is not None and follower_sent is not None:
            handed = await self._submit(follower)  # raising: _settle fails follower_sent
            pending.follower = pending.follower_sent = None
            follower_sent.set_result(handed)
        pending.kept.set_result(None)
        await self._send_durably(changelogs, "the changelogs", sending)
        self._ack(records)

    async def _in_order(self, records: Sequence[Any]) -> list[Any]:
        """The events that follow, in their partition, the last one processed.

        faust drops records around rebalances in more than one place (the failure suite
        lost 36 to 44 alerts of one partition this way while a restarted worker took over);
        the ones its stream skips are no longer acked (faustapp.py), the others are caught
        here. But a partition's offsets also jump where the broker has no record to give
        (transaction markers, records deleted by retention or compaction): a jump is judged
        by reading the partition from the expected offset (gaps.judge, OffsetProbe). A
        legitimate gap is moved over (counted in tocsin_correlation_offset_gaps_accepted);
        skipped records are read again: the consumer seeks back to the first of them and
        the partition's events are set aside (marked acked, so faust never records them as
        committable) until it arrives. If it has not come within REREAD_AGAIN_S, the
        broker is asked again and the seek repeated (from where its records now start).
        """
        kept = []
        for message in records:
            tp = message.tp
            offset = message.offset
            awaited = self._rereading.get(tp)
            if awaited is not None:
                wanted, since = awaited
                if offset != wanted:
                    message.acked = True  # comes again after the seek (or came before)
                    if offset > wanted and time.monotonic() - since > REREAD_AGAIN_S:
                        first = await self._first_available(tp, wanted, None)
                        target = reread_again_from(wanted, first)
                        if target > wanted:
                            self._gap_accepted(tp, wanted, target)
                        await self._seek_back(tp, target)
                    continue
                del self._rereading[tp]
            expected = self._next_offset.get(tp)
            if expected is not None and offset > expected:
                first = await self._first_available(tp, expected, offset)
                verdict = judge(expected, offset, first)
                if verdict.accepted:
                    self._gap_accepted(tp, expected, expected + verdict.accepted)
                if verdict.reread_from is not None:
                    SKIPPED.labels(tp.topic).inc(verdict.skipped)
                    log.warning(
                        "records skipped by the consumer; reading them again",
                        extra={
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "from_offset": verdict.reread_from,
                            "to_offset": offset - 1,
                        },
                    )
                    await self._seek_back(tp, verdict.reread_from)
                    message.acked = True
                    continue
            self._next_offset[tp] = offset + 1
            kept.append(message)
        return kept

    async def _seek_back(self, tp: Any, offset: int) -> None:
        """Read the partition again from ``offset``; its events wait for that one."""
        REREADS.labels(tp.topic).inc()
        await self.app.consumer.seek(tp, offset)
        self._next_offset[tp] = offset
        self._rereading[tp] = (offset, time.monotonic())

    def _gap_accepted(self, tp: Any, start: int, end: int) -> None:
        GAPS_ACCEPTED.labels(tp.topic).inc()
        log.debug(
            "no records at these offsets (transaction markers, deleted or compacted records)",
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "from_offset": start,
                "to_offset": end - 1,
            },
        )

    async def _first_available(self, tp: Any, expected: int, met: int | None) -> int | None:
        """The offset of the first record the broker gives from ``expected`` (None: none,
        or it could not be asked). Answered from the last read of the partition when that
        covers ``expected`` up to ``met``."""
        known = self._known_offsets.get(tp)
        if met is not None and known is not None:
            first = known.first_from(expected, met)
            if first is not None:
                return first
        try:
            offsets = await self.offset_probe().offsets_from(tp.topic, tp.partition, expected)
        except Exception:
            log.warning(
                "could not read the partition to judge an offset gap; reading it again",
                extra={"topic": tp.topic, "partition": tp.partition, "offset": expected},
                exc_info=True,
            )
            return None
        if not offsets:
            return None
        self._known_offsets[tp] = KnownOffsets(expected, offsets)
        return offsets[0]

    def offset_probe(self) -> OffsetProbe:
        if self._offset_probe is None:  # made on the worker's loop, used only there
            guarantee: Any = self.app.conf.processing_guarantee  # typed as the class
            committed = guarantee == ProcessingGuarantee.EXACTLY_ONCE
            self._offset_probe = OffsetProbe(
                self.bootstrap,
                self.kafka_security,
                "read_committed" if committed else "read_uncommitted",
            )
        return self._offset_probe

    async def _on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        # After a rebalance the consumer starts again from the committed offsets.
        self._next_offset.clear()
        self._rereading.clear()
        self._known_offsets.clear()

    async def _process_input(self, batch: Batch, message: Any, config: TocsinConfig) -> None:
        if not self._spans:
            # No exporter: a span would be built and thrown away, yet it costs as much as
            # the engine. The input's trace context goes on to what it produces unchanged.
            await self._attempt(
                batch, message, config, None, forwarded_kafka_headers(message.headers)
            )
            return
        with consume_span(
            self._tracer,
            message.topic,
            _headers(message),
            **{"messaging.kafka.partition": message.partition},
        ) as span:
            await self._attempt(batch, message, config, span, None)

    async def _attempt(
        self,
        batch: Batch,
        message: Any,
        config: TocsinConfig,
        span: Any,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        """Run one input until it is done or dead-lettered. `headers`: those of every
        record it produces when it has no span (None: each record gets its own)."""
        backoff = RETRY_FIRST_S
        while True:
            batch.start_input()
            try:
                outputs = await self._handle(
                    batch.engine, message.topic, message.value, config, headers
                )
                _check_sizes(outputs)
            except TRANSIENT as error:
                # A store or the broker is down: wait and do this input again (its
                # partial writes undone), rather than dead-letter a good alert.
                batch.drop_input()
                if span is not None:
                    record_error(span, error)
                log.warning(
                    "processing failed; retrying",
                    extra={"topic": message.topic, "offset": message.offset},
                    exc_info=True,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            except Exception as error:
                batch.drop_input()
                if span is not None:
                    record_error(span, error)
                batch.outputs.append(self._dead_letter(message, error, headers))
                return
            batch.keep_input(message.partition, outputs)
            consumed = batch.consumed
            consumed[message.topic] = consumed.get(message.topic, 0) + 1
            return

    def _consumed(self, topic: str) -> Any:
        counter = self._consumed_counters.get(topic)
        if counter is None:
            counter = self._consumed_counters[topic] = metrics.MESSAGES_CONSUMED.labels(
                SERVICE, topic
            )
        return counter

    async def _handle(
        self,
        engine: CorrelationEngine,
        topic: str,
        value: bytes,
        config: TocsinConfig,
        headers: list[tuple[str, bytes]] | None,
    ) -> list[Output]:
        now = time.time()
        if topic == ALERTS_NORMALIZED.name:
            alert = alert_pb2.Alert()
            alert.ParseFromString(value)
            view = await self._view(alert, config, now)
            outcome = engine.on_alert(alert, config, now, view)
        elif topic == INCIDENTS_COMMANDS.name:
            command = incident_pb2.IncidentCommand()
            command.ParseFromString(value)
            outcome = engine.on_command(command, now)
        else:
            change = alert_pb2.ChangeEvent()
            change.ParseFromString(value)
            record = engine.on_change(change, now, self.change_retention)
            await self._keep_change(record, now)
            return []
        if outcome.dropped:
            DROPPED.labels(outcome.dropped).inc()
            # Counted above; at INFO a replay of inputs for removed services floods the log.
            log.debug("input changed nothing", extra={"reason": outcome.dropped})
        if outcome.suppressed:
            SUPPRESSED.labels(outcome.suppressed).inc()
        await self._index(outcome, config)
        if headers is not None:
            return [
                Output(
                    INCIDENTS_EVENTS.name,
                    incident_event.incident.incident_id.encode(),
                    incident_event.SerializeToString(),
                    headers,
                )
                for incident_event in outcome.events
            ]
        outputs = []
        for incident_event in outcome.events:
            with produce_span(self._tracer, INCIDENTS_EVENTS.name):
                outputs.append(
                    Output(
                        INCIDENTS_EVENTS.name,
                        incident_event.incident.incident_id.encode(),
                        incident_event.SerializeToString(),
                        kafka_headers(),
                    )
                )
        return outputs

    async def _keep_change(self, record: ChangeRecord, now: float) -> None:
        """Changes are also kept in Redis, for services of other partitions that depend on
        this one (idempotent: a replay adds the same member)."""
        key = CHANGES_KEY + record.service_id
        async with self.redis().pipeline(transaction=False) as pipe:
            pipe.zadd(key, {record.raw: record.at})
            pipe.zremrangebyscore(key, "-inf", now - self.change_retention)
            pipe.expire(key, int(self.change_retention) + 60)
            await pipe.execute()

    async def _view(self, alert: alert_pb2.Alert, config: TocsinConfig, now: float) -> View:
        """Silences, and for a trigger on a service with dependencies, the open incidents
        and recent changes of its upstream services (which other partitions own)."""
        if alert.action != alert_pb2.ALERT_ACTION_TRIGGER:
            return View(self.silences)
        try:
            upstream = upstream_of(config, alert.service_id)
        except KeyError:
            return View(self.silences)
        if not upstream:
            return View(self.silences)
        lookback = service_of(config, alert.service_id).change_lookback.total_seconds()
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
        """Every second: reload silences (deleting those past their retention); release held
        incidents whose holder resolved."""
        while True:
            try:
                now = time.time()
                stored = await load_silences(self.redis())
                self.silences = [s for s in stored if s.ends_at > now]
                ends = ((s.silence_id, s.ends_at) for s in stored)
                limits = self.config.current.limits
                await purge_silences(self.redis(), purgeable_silences(limits, ends, now))
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
            producer = await self.producer()
            await producer.send(INCIDENTS_COMMANDS, command.service_id, command)

    # --- output ---------------------------------------------------------------------

    async def producer(self) -> EventProducer:
        if self._producer is None:  # started on the worker's loop, used only there
            producer = EventProducer(self.bootstrap, SERVICE, security=self.kafka_security)
            await producer.start()
            self._producer = producer
        return self._producer

    async def batch_sender(self) -> BatchSender:
        if self._batch_sender is None:  # started on the worker's loop, used only there
            sender = BatchSender(self.bootstrap, self.kafka_security)
            await sender.start()
            self._batch_sender = sender
        return self._batch_sender

    def _dead_letter(
        self, message: Any, error: Exception, headers: list[tuple[str, bytes]] | None = None
    ) -> Output:
        """Keep an input that failed, whole, with why; the partition keeps moving."""
        log.exception(
            "record failed; dead-lettered",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        letter = build_dead_letter(
            reason=f"{type(error).__name__}: {error}",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=(_headers(message) or {}).items(),
            service=SERVICE,
            now=datetime.now(UTC),
        )
        metrics.DEAD_LETTERS.labels(SERVICE, message.topic, type(error).__name__).inc()
        return Output(
            ALERTS_DEADLETTER.name,
            letter.original_key,
            letter.SerializeToString(),
            kafka_headers() if headers is None else headers,
        )

    async def _submit(self, records: list[Output]) -> Submitted | None:
        """Hand a batch's records to the sender, which sends them while the caller goes on;
        None if handing them over failed (_send_durably sends them all again)."""
        if not records:
            return []
        try:
            sender = await self.batch_sender()
            return await sender.submit(records)
        except TRANSIENT:
            log.warning("handing the batch's records over failed", exc_info=True)
            return None

    def _changelog_records(self, batch: Batch) -> list[Output]:
        """The changelog records of the batch's writes, each in the partition of the input
        that wrote it, serialized as faust's recovery reads them back."""
        records: list[Output] = []
        for name, view in batch.views.items():
            codec = self._changelog_codecs.get(name)
            if codec is None:
                codec = self._changelog_codecs[name] = changelog_codec(self.tables[name])
            topic, dump_key, dump_value = codec
            partitions = batch.partitions[name]
            for key, value, deleted in view.staged():
                raw_value = None if deleted else dump_value(value)
                records.append(Output(topic, dump_key(key), raw_value, [], partitions[key]))
        return records

    def _apply(self, batch: Batch) -> None:
        """Apply a batch's writes (its events durable) to the tables; their changelog
        records (_changelog_records) are sent by the worker's batch sender rather than
        faust's send_soon queue, which takes one record at a time (100 deep; it overflowed
        at every batch), with faust's own serialization so that its recovery reads them
        back."""
        for name, view in batch.views.items():
            table: Any = self.tables[name]  # a faust Table (TableT lacks its store)
            data = table.data
            for key, value, deleted in view.staged():
                if deleted:
                    data.pop(key, None)
                else:
                    data[key] = value

    async def _send_durably(
        self, records: list[Output], what: str, submitted: Submitted | None = None
    ) -> None:
        """Every record acknowledged by Kafka (acks=all); on a broker failure, all of them
        again (until the broker is back: the partition waits). `submitted`: the records'
        sends already under way (_submit)."""
        if not records:
            return
        backoff = RETRY_FIRST_S
        while True:
            try:
                sender = await self.batch_sender()
                if submitted is None:
                    submitted = await sender.submit(records)
                await sender.wait(submitted)
                return
            except TRANSIENT:
                log.warning("sending %s failed; sending them again", what, exc_info=True)
                submitted = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    async def _index(self, outcome: Outcome, config: TocsinConfig) -> None:
        """Keep the open-incident index of upstream services (idempotent: a replay after a
        crash writes the same entries again)."""
        upstream = self._upstream_services(config)
        if not upstream:
            return
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


def _settle(pending: Pending, finishing: asyncio.Future[None]) -> None:
    """The batch's _finish ended: its outcome is the batch's `done`, and a failure before
    its writes were kept is `kept`'s, and its follower's, so that nothing further is
    sent."""
    waiting = [pending.kept, pending.follower_sent, pending.done]
    for future in waiting:
        if future is None or future.done():
            continue
        if finishing.cancelled():
            future.cancel()
        elif finishing.exception() is not None:
            future.set_exception(finishing.exception())  # type: ignore[arg-type]
        elif future is pending.done:
            future.set_result(None)
        else:  # finished without handing them over: cannot be
            future.set_exception(RuntimeError("the batch finished without its changelogs"))


Dump = Callable[[Any], bytes]


Submitted = list["asyncio.Future[Any]"]


class BatchSender:
    """Sends a batch's records durably (idempotent, acks=all) as one record batch per
    partition, in order: aiokafka's batch interface, not a send() per record.

    A send() per record was the biggest cost of sending: it places, checks and queues every
    record and makes it a future of its own. A record with no partition goes where Kafka's
    default partitioner puts its key (murmur2, as EventProducer places it), so an incident's
    events stay in its partition, in the order they were made."""

    BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MiB)

    def __init__(self, bootstrap: str, security: KafkaSecurity | None = None) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"tocsin-{SERVICE}-batches",
            enable_idempotence=True,
            acks="all",
            max_batch_size=self.BATCH_BYTES,
            compression_type=None,
            **client_options(security),
        )
        self._partitioner = KeyPartitioner()
        self._counters: dict[str, Any] = {}

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def submit(self, records: Sequence[Output]) -> Submitted:
        """Hand `records` over as record batches; await them with :meth:`wait`."""
        producer = self._producer
        by_partition: dict[tuple[str, int], list[Output]] = {}
        counts: dict[str, int] = {}
        for record in records:
            partition = record.partition
            if partition is None:
                count = counts.get(record.topic)
                if count is None:
                    count = counts[record.topic] = await self._count(record.topic)
                partition = self._partitioner.partition(record.key, count)
            by_partition.setdefault((record.topic, partition), []).append(record)
        futures: Submitted = []
        for (topic, partition), batch_records in by_partition.items():
            builder = producer.create_batch()
            for record in batch_records:
                if not _append(builder, record):
                    futures.append(await producer.send_batch(builder, topic, partition=partition))
                    # A new batch takes its first record whatever its size (aiokafka): the
                    # size a record may have is checked per input (_check_sizes).
                    builder = producer.create_batch()
                    _append(builder, record)
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            self._counter(topic).inc(len(batch_records))
        return futures

    @staticmethod
    async def wait(futures: Submitted) -> None:
        """Wait until every submitted batch is acknowledged; raise if any failed."""
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def _count(self, topic: str) -> int:
        """The topic's partition count (from the producer's metadata, fetched if need be)."""
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            partitions = await self._producer.partitions_for(topic)
        return len(partitions)

    def _counter(self, topic: str) -> Any:
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = metrics.MESSAGES_PRODUCED.labels(SERVICE, topic)
        return counter


# The most an incident event's value and key may take, below the broker's default
# message.max.bytes (1 MiB) with room for its headers (the trace context) and the batch
# around it. An alert near the 512 KiB ingest allows, with its labels copied into the
# incident, can make a bigger one.
MAX_EVENT_BYTES = 1_000_000


class OffsetProbe:
    """Reads a partition from an offset and returns the offsets of the records the broker
    gives first: a consumer of its own (no group, nothing committed), so that judging a
    gap never moves the worker's consumer. Read as the worker's consumer reads (isolation
    level): a record it would not be given is no record here either."""

    MAX_RECORDS = 500
    TIMEOUT_MS = 2000

    def __init__(
        self, bootstrap: str, security: KafkaSecurity | None, isolation_level: str
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=f"tocsin-{SERVICE}-offset-probe",
            group_id=None,
            enable_auto_commit=False,
            # A read from before the log start (records deleted) answers with the first
            # record there is.
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
            **client_options(security),
        )
        self._started = False

    async def offsets_from(self, topic: str, partition: int, offset: int) -> list[int]:
        """Offsets of the first records at or after ``offset`` (ascending; empty: none
        within TIMEOUT_MS)."""
        consumer = self._consumer
        if not self._started:
            await consumer.start()
            self._started = True
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        fetched = await consumer.getmany(
            tp, timeout_ms=self.TIMEOUT_MS, max_records=self.MAX_RECORDS
        )
        return [record.offset for record in fetched.get(tp, ())]


def _check_sizes(outputs: Sequence[Output]) -> None:
    """An event the broker would refuse fails its input (dead-lettered, with why): sent, it
    would be refused and sent again forever, and its partition would never move on."""
    for output in outputs:
        size = len(output.value or b"") + len(output.key)
        if size > MAX_EVENT_BYTES:
            raise ValueError(
                f"its {output.topic} record would have {size} bytes, more than the "
                f"{MAX_EVENT_BYTES} a record may have"
            )


def _append(builder: Any, record: Output) -> bool:
    """Add a record to a record batch; False if the batch is full."""
    appended = builder.append(
        key=record.key, value=record.value, timestamp=None, headers=record.headers
    )
    return appended is not None


def _json_dumps(value: Any) -> bytes:
    """faust's own JSON (orjson's, which faust uses when installed: requirements.txt pins
    it), without its codec and registry layers."""
    data: bytes | str = faust_json.dumps(value)
    return data if isinstance(data, bytes) else data.encode()


def _dumps(serializer: str) -> Dump:
    return _json_dumps if serializer == "json" else get_codec(serializer).dumps


def changelog_codec(table: Any) -> tuple[str, Dump, Dump]:
    """(topic, key serializer, value serializer) of a table's changelog: the bytes faust's
    own ``prepare_key``/``prepare_value`` make (so that its recovery reads them back), by
    the table's codecs directly rather than through faust's schema and registry layers on
    every record (the unit tests hold the two equal)."""
    changelog = table.changelog_topic
    schema = changelog.schema
    dump_key: Dump
    dump_value: Dump
    if (
        isinstance(table.key_serializer, str)
        and isinstance(table.value_serializer, str)
        and schema.key_type is None
        and schema.value_type is None
    ):
        dump_key = _dumps(table.key_serializer)
        dump_value = _dumps(table.value_serializer)
    else:  # not how the worker's tables are made: faust's general path
        dump_key = lambda key: changelog.prepare_key(key, table.key_serializer)[0]  # noqa: E731
        dump_value = lambda value: changelog.prepare_value(value, table.value_serializer)[0]  # noqa: E731
    return changelog.get_topic_name(), dump_key, dump_value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _headers(message: Any) -> Any:
    headers = message.headers
    if not headers:
        return None
    return dict(headers) if not isinstance(headers, dict) else headers
