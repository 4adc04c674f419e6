"""Kafka clients for the services that use a plain client (aiokafka).

- `EventProducer`: idempotent, acks=all; every record carries the current trace context.
- `ConsumerLoop`: a consumer group member that processes each record in its own span,
  commits only what was processed (at-least-once), retries transient failures in place
  (the partition waits rather than loses a record) and sends bad records to a dead letter
  with the reason and the original bytes, so the partition keeps moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata, TopicPartition
from google.protobuf.message import Message
from murmurhash2 import murmurhash2
from prometheus_client import Counter

from tocsin_common import metrics
from tocsin_common.deadletter import dead_letter as build_dead_letter
from tocsin_common.settings import Settings
from tocsin_common.topics import ALL_TOPICS, DEFAULT_PARTITIONS, Topic, partition_problems
from tocsin_common.tracing import kafka_headers, produce_span, record_error, record_span, tracer
from tocsin_common.transport import KafkaSecurity

log = logging.getLogger("tocsin.kafka")


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """The security keyword arguments of every aiokafka client: SSL and SASL as
    ``security`` says, or as this process's environment says when it is None
    (TOCSIN_KAFKA_SECURITY_PROTOCOL..., see tocsin_common.transport)."""
    return (security if security is not None else KafkaSecurity.from_env()).client_options()


class BadRecord(Exception):
    """A record that can never be processed (undecodable, invalid): dead-letter it."""


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic] = ALL_TOPICS,
    security: KafkaSecurity | None = None,
    partitions: int = DEFAULT_PARTITIONS,
) -> dict[str, int]:
    """Create the topics that do not exist yet (idempotent; safe with several replicas),
    the pipeline's with ``partitions`` partitions (Settings.kafka_partitions). Returns the
    partition count of each of ``topics`` as the broker has it, for
    tocsin_common.topics.partition_problems: an existing topic keeps its count."""
    topics = list(topics)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tocsin-admin", **client_options(security)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                t.name,
                t.partition_count(partitions),
                1 if _single_broker(bootstrap) else 3,
                topic_configs={
                    "retention.ms": str(t.retention_ms),
                    **({"cleanup.policy": "compact"} if t.compacted else {}),
                },
            )
            for t in topics
            if t.name not in existing
        ]
        if missing:
            # Another replica may create one between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        described = await admin.describe_topics([t.name for t in topics])
    finally:
        await admin.close()
    return {
        str(t["topic"]): len(t["partitions"])
        for t in described
        if not t.get("error_code") and t["partitions"]
    }


class PartitionMismatch(RuntimeError):
    """Topics whose partition counts a service cannot run with (correlation's co-partitioned
    inputs and changelogs against TOCSIN_KAFKA_PARTITIONS)."""


async def ensure_pipeline_topics(
    settings: Settings, topics: Iterable[Topic] = ALL_TOPICS, strict: Iterable[Topic] = ()
) -> dict[str, int]:
    """ensure_topics with the process's settings; every disagreement between the broker's
    partition counts and TOCSIN_KAFKA_PARTITIONS is logged as a warning, and one about a
    topic of ``strict`` raises PartitionMismatch. Returns the broker's counts."""
    topics = list(topics)
    configured = settings.kafka_partitions
    actual = await ensure_topics(
        settings.kafka_bootstrap, topics, settings.kafka_security, configured
    )
    for problem in partition_problems(actual, configured, topics):
        log.warning("%s (docs/deployment.md#partitions)", problem)
    fatal = partition_problems(actual, configured, list(strict))
    if fatal:
        raise PartitionMismatch(
            "; ".join(fatal) + ": the topics were created with another count than this "
            "process's TOCSIN_KAFKA_PARTITIONS, see docs/deployment.md#partitions"
        )
    return actual


def _single_broker(bootstrap: str) -> bool:
    return "," not in bootstrap


async def wait_for_kafka(
    bootstrap: str, timeout_s: float = 60.0, security: KafkaSecurity | None = None
) -> None:
    """Wait until the broker answers (services may start before it is ready)."""
    deadline = time.monotonic() + timeout_s
    options = client_options(security)
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="tocsin-probe", **options
        )
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


_MURMUR2_SEED = 0x9747B28C  # the Java client's


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``, which places keyed records):
    MurmurHash2 with Kafka's seed, in C. aiokafka's is pure Python, 4 µs for a uuid key
    against 0.3, which counted where every record has a new key (incident ids); the unit
    tests hold the two equal on keys of every length, and to Kafka's own vectors."""
    return murmurhash2(data, _MURMUR2_SEED)


class KeyPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as the Java client does it),
    remembering the partitions of recent keys.

    Many of Tocsin's keys repeat (service and user ids), and those find their partition in
    the table; the table is dropped when full, which bounds its memory whatever the keys.
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        self._max_keys = max_keys
        self._known: dict[tuple[bytes, int], int] = {}

    def partition(self, key: bytes, count: int) -> int:
        """The partition of `key` among `count` partitions."""
        known = self._known
        slot = (key, count)
        partition = known.get(slot)
        if partition is None:
            if len(known) >= self._max_keys:
                known.clear()
            partition = known[slot] = (murmur2(key) & 0x7FFFFFFF) % count
        return partition

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """aiokafka's partitioner interface."""
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        return all_partitions[self.partition(key, len(all_partitions))]


class EventProducer:
    """Sends protobuf messages to Tocsin topics, durably (idempotent, acks=all).

    No linger by default: a record goes out as soon as the connection to its broker is
    free, and records handed over while a request is in flight (aiokafka keeps one per
    broker) go together in the next one — batches as big as the load makes them, and no
    fixed wait for a lone record (a page, an accepted alert) at a low rate."""

    def __init__(
        self,
        bootstrap: str,
        service: str,
        *,
        linger_ms: int = 0,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._service = service
        self._tracer = tracer(f"tocsin.{service}.producer")
        self._failures: list[BaseException] = []  # of enqueued records, raised by flush()
        self._produced: dict[str, Counter] = {}  # the produced-messages counter, per topic
        self._partitioner = KeyPartitioner()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"tocsin-{service}",
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            compression_type=None,
            partitioner=self._partitioner,
            **client_options(security),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def flush(self) -> None:
        """Wait until every record handed to the producer so far is acknowledged; raise if
        any of them failed (a consumer must then not commit the offsets it was about to)."""
        await self._producer.flush()
        if self._failures:
            first, self._failures = self._failures[0], []
            raise first

    def _note_failure(self, future: asyncio.Future[RecordMetadata]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._failures.append(future.exception())  # type: ignore[arg-type]

    async def send(
        self,
        topic: Topic,
        key: str,
        message: Message | bytes,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> RecordMetadata:
        """Produce one record and wait until the broker has it (all in-sync replicas).

        A failure is raised here, to the caller, and not again by flush()."""
        future = await self._enqueue(topic, key, message, headers, tracked=False)
        return await future

    async def enqueue(
        self,
        topic: Topic,
        key: str,
        message: Message | bytes,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> asyncio.Future[RecordMetadata]:
        """Hand one record to the producer; await the returned future for durability.

        Enqueue many, then await them together: the producer batches them into few requests.
        A failure also makes the next flush() raise, so a consumer loop that only enqueues
        never commits past a record that did not make it.
        """
        return await self._enqueue(topic, key, message, headers, tracked=True)

    async def enqueue_prepared(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Hand over a record exactly as prepared: its headers already carry the trace
        context of the span that made it (so a re-send after a failure keeps its trace).
        Tracked like :meth:`enqueue`: a failure also makes the next flush() raise."""
        return await self._hand_over(topic, key, value, headers, partition, tracked=True)

    async def _hand_over(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
        *,
        tracked: bool,
    ) -> asyncio.Future[RecordMetadata]:
        if partition is None and key is not None:
            # Placed here when the topic's partitions are known: aiokafka's own placement
            # builds two lists of the topic's partitions for every record first.
            partitions = self._producer.client.cluster.partitions_for_topic(topic)
            if partitions:
                partition = self._partitioner.partition(key, len(partitions))
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            topic, value=value, key=key, headers=headers, partition=partition
        )
        if tracked:
            future.add_done_callback(self._note_failure)
        counter = self._produced.get(topic)
        if counter is None:  # labels() for every record showed in correlation's profile
            counter = self._produced[topic] = metrics.MESSAGES_PRODUCED.labels(self._service, topic)
        counter.inc()
        return future

    async def _enqueue(
        self,
        topic: Topic,
        key: str,
        message: Message | bytes,
        headers: Iterable[tuple[str, bytes]],
        *,
        tracked: bool,
    ) -> asyncio.Future[RecordMetadata]:
        value = message if isinstance(message, bytes) else message.SerializeToString()
        with produce_span(self._tracer, topic.name, **{"messaging.kafka.message.key": key}):
            return await self._hand_over(
                topic.name,
                key.encode("utf-8"),
                value,
                kafka_headers(headers),
                None,
                tracked=tracked,
            )

    async def dead_letter(
        self, topic: Topic, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        """Keep a record that cannot be processed, with why (cut to fit a record: see
        tocsin_common.deadletter)."""
        letter = build_dead_letter(
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            service=self._service,
            now=datetime.now(UTC),
        )
        await self.send(topic, letter.original_key.decode("utf-8", "replace"), letter)
        metrics.DEAD_LETTERS.labels(self._service, record.topic, reason.split(":")[0]).inc()


Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]


def group_consumer(
    bootstrap: str, group_id: str, service: str, security: KafkaSecurity | None = None
) -> AIOKafkaConsumer:
    """A consumer-group member as every Tocsin service runs one: offsets committed by the
    caller after processing, transactional records read only once committed, and a dead
    member's partitions moved after 10 s rather than Kafka's default 45 s."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=f"tocsin-{service}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_interval_ms=300_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        **client_options(security),
    )


class ConsumerLoop:
    """One member of a consumer group, processing records in order per partition."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topic: Topic,
        service: str,
        handler: Handler,
        producer: EventProducer,
        dead_letter_topic: Topic,
        max_batch: int = 500,
        on_durable: Hook | None = None,
        on_abandoned: Callable[[], None] | None = None,
        commit_every_s: float = 0.2,
        security: KafkaSecurity | None = None,
    ) -> None:
        """``on_durable``: called once per batch after everything the handlers enqueued is
        acknowledged by the broker and before the offsets are committed; a handler that
        must record "done" only once its records are durable stages that record and
        writes it there. Raising makes it run again (after a backoff), not the batch.
        ``on_abandoned``: called when a record the batch enqueued failed; what was staged
        must be forgotten, as the batch is read and processed again.
        ``commit_every_s``: offsets of finished batches are committed at most this often
        (and when the loop idles or stops): a commit per small batch cost the broker and
        this process more than the batch; a crash replays at most this much more."""
        self._topic = topic
        self._service = service
        self._handler = handler
        self._producer = producer
        self._dead_letter_topic = dead_letter_topic
        self._max_batch = max_batch
        self._on_durable = on_durable
        self._on_abandoned = on_abandoned
        self._commit_every_s = commit_every_s
        self._finished: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed_at = time.monotonic()
        self._tracer = tracer(f"tocsin.{service}.consumer")
        self._batches = metrics.CONSUMER_BATCHES.labels(service)
        self._stopping = asyncio.Event()
        self.joined = asyncio.Event()  # set once the group gave this member its partitions
        self._consumer = group_consumer(bootstrap, group_id, service, security)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic.name], listener=_JoinedListener(self.joined))

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(Exception):
            await self._commit()
        await self._consumer.stop()

    async def _commit(self) -> None:
        """Commit what finished; a member that lost its partitions in a rebalance cannot,
        and need not: their new owner reads from the last commit again (handlers are
        idempotent)."""
        finished, self._finished = self._finished, {}
        self._committed_at = time.monotonic()
        if not finished:
            return
        try:
            await self._consumer.commit(finished)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("offsets not committed (partitions moved): %s", error)

    async def run(self) -> None:
        """Process until stopped, committing as batches finish.

        Partitions are processed concurrently, each in order. Before offsets are committed
        the producer is flushed, so whatever the handlers enqueued is durable first: a crash
        can repeat work (at-least-once) but never lose it. Offsets are committed every
        ``commit_every_s`` at most.
        """
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
            if not batches:
                await self._commit()
                continue
            self._batches.inc()
            done = await asyncio.gather(
                *(self._process_partition(records) for records in batches.values())
            )
            try:
                await self._producer.flush()
            except Exception:
                # Some record a handler enqueued did not make it, and which one is not
                # known: process the whole batch again (handlers are idempotent).
                log.exception("a record of this batch was not produced; processing it again")
                if self._on_abandoned is not None:
                    self._on_abandoned()
                assigned = self._consumer.assignment()
                for tp, records in batches.items():
                    if tp in assigned:  # one moved away is read again by its new owner
                        self._consumer.seek(tp, records[0].offset)
                continue
            if self._on_durable is not None:
                await self._retrying(self._on_durable, "finishing a batch")
            self._finished.update(
                {tp: last + 1 for tp, last in zip(batches, done, strict=True) if last >= 0}
            )
            if time.monotonic() - self._committed_at >= self._commit_every_s:
                await self._commit()

    async def _retrying(self, step: Hook, what: str) -> None:
        """Run ``step`` until it succeeds (a store that is down comes back), unless stopped."""
        backoff = 0.1
        while True:
            try:
                await step()
                return
            except Exception:
                log.exception("%s failed; retrying", what)
            if self._stopping.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _process_partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Process one partition's records in order; the offset of the last one done."""
        last = -1
        for record in records:
            if self._stopping.is_set():
                break
            await self._process(record)
            last = record.offset
        return last

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        backoff = 0.1
        while True:
            with record_span(self._tracer, record) as span:
                started = time.perf_counter()
                try:
                    await self._handler(record)
                except BadRecord as bad:
                    record_error(span, bad)
                    log.warning(
                        "dead-lettering record",
                        extra={"topic": record.topic, "offset": record.offset, "reason": str(bad)},
                    )
                    await self._producer.dead_letter(self._dead_letter_topic, record, str(bad))
                    return
                except Exception as error:
                    # Transient (a store or peer is down): retry the same record, so the
                    # partition waits instead of skipping it.
                    record_error(span, error)
                    log.exception(
                        "processing failed; retrying",
                        extra={"topic": record.topic, "offset": record.offset},
                    )
                else:
                    metrics.MESSAGES_CONSUMED.labels(self._service, record.topic).inc()
                    metrics.PROCESSING_SECONDS.labels(self._service, record.topic).observe(
                        time.perf_counter() - started
                    )
                    return
            if self._stopping.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())


class _JoinedListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, joined: asyncio.Event) -> None:
        self._joined = joined

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        self._joined.set()


def undecodable_record_at(error: BaseException) -> tuple[TopicPartition, int] | None:
    """Where the Kafka client stopped when it could not decode a record: (partition, offset
    of the first record it could not hand over), or None if the error did not come from
    its record reader.

    aiokafka decodes each record's header names as UTF-8 while it reads a fetch, before
    any of our code sees the record: a producer that writes a name that is not UTF-8 (the
    Java client never does; a hand-written one can) makes ``getmany`` raise for the whole
    fetch, every time, and stalls the partition. The reader's frame knows which partition
    and how far it got; a test pins this against the installed aiokafka."""
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "_unpack_records" and "tp" in frame.f_locals:
            reader = frame.f_locals.get("self")
            offset = getattr(reader, "next_fetch_offset", None)
            tp = frame.f_locals["tp"]
            if isinstance(tp, TopicPartition) and isinstance(offset, int):
                return tp, offset
        traceback = traceback.tb_next
    return None
