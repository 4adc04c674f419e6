"""Kafka ``alerts.raw``: events from tools that emit to Kafka directly.

The ``tocsin-format`` header names the wire format (events_v2, alertmanager, grafana); the
routing key comes from the ``tocsin-routing-key`` header, else from the body's
``routing_key``. ``decode_record`` is pure: a record that can never be accepted raises
RecordRejected with the reason (category, then field and problem).

``RawConsumer`` is the thin loop around it (group ``tocsin-ingest-raw``), batching per
partition: it decodes each partition's records in order, hands their alerts to the producer
without waiting for each, dead-letters a rejected record to alerts.deadletter with the
original bytes (the partition moves on), then flushes the producer once for the whole
batch and only then commits the batch's offsets: nothing counts as done before it is
durable. A Kafka failure (a flush, a dead letter) commits nothing of what it touched and
goes back to the first record not yet durable, after a back-off: records may repeat
(at least once), never be skipped. With spans on, each record is processed in its own
CONSUMER span, as tocsin_common.kafka.ConsumerLoop does; with spans off only the trace
context of a record that carries one is made current, so its alerts carry it on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from tocsin.v1 import alert_pb2
from tocsin_common import metrics, validation
from tocsin_common.clock import Clock
from tocsin_common.config import ConfigStore, TocsinConfig
from tocsin_common.kafka import EventProducer, group_consumer, undecodable_record_at
from tocsin_common.topics import ALERTS_DEADLETTER, ALERTS_RAW, FORMAT_HEADER, INGEST_RAW_GROUP
from tocsin_common.tracing import (
    attach,
    context_from_kafka_headers,
    detach,
    record_error,
    record_span,
    tracer,
)
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import auth, fields, formats
from tocsin_ingest.publisher import AlertPublisher

log = logging.getLogger("tocsin.ingest.raw")

GROUP_ID = INGEST_RAW_GROUP.group_id
ROUTING_KEY_HEADER = "tocsin-routing-key"
MAX_RECORD_BYTES = validation.MAX_REQUEST_BYTES


class RecordRejected(Exception):
    """A record that can never be accepted; ``category`` groups reasons (for metrics)."""

    def __init__(self, category: str, errors: list[FieldError]) -> None:
        self.category = category
        self.errors = errors
        super().__init__(f"{category}: " + "; ".join(str(e) for e in errors))


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace").strip()
    return None


def decode_record(
    headers: Iterable[tuple[str, bytes]] | None,
    value: bytes | None,
    config: TocsinConfig,
    received_at: datetime,
    keys: auth.KeyCache | None = None,
) -> list[alert_pb2.Alert]:
    """The normalized alerts of one alerts.raw record; raises RecordRejected, and nothing
    else: any other exception while decoding is a rejection too ("unprocessable", with
    the exception named), so no record can stop its partition."""
    try:
        return _decode_record(headers, value, config, received_at, keys)
    except RecordRejected:
        raise
    except Exception as error:
        log.warning("alerts.raw: decoding a record failed", exc_info=True)
        raise RecordRejected(
            "unprocessable",
            [
                FieldError(
                    "(record)",
                    f"could not be decoded ({type(error).__name__}: "
                    f"{validation.clip(validation.safe_text(str(error)))})",
                )
            ],
        ) from None


def _decode_record(
    headers: Iterable[tuple[str, bytes]] | None,
    value: bytes | None,
    config: TocsinConfig,
    received_at: datetime,
    keys: auth.KeyCache | None,
) -> list[alert_pb2.Alert]:
    headers = list(headers or ())
    fmt = _header(headers, FORMAT_HEADER)
    if not fmt:
        raise RecordRejected(
            "unknown format",
            [FieldError(FORMAT_HEADER, f"header is required: {', '.join(formats.NORMALIZERS)}")],
        )
    if fmt not in formats.NORMALIZERS:
        raise RecordRejected(
            "unknown format",
            [
                FieldError(
                    FORMAT_HEADER, f"{fmt[:50]!r} is not one of {', '.join(formats.NORMALIZERS)}"
                )
            ],
        )
    if value is None:
        raise RecordRejected("undecodable", [FieldError("(body)", "is empty (a tombstone)")])
    if len(value) > MAX_RECORD_BYTES:
        raise RecordRejected(
            "undecodable", [FieldError("(body)", f"is larger than {MAX_RECORD_BYTES} bytes")]
        )
    try:
        body = fields.decode_json(value)
    except InvalidInput as bad:
        raise RecordRejected("undecodable", bad.errors) from None
    key = _header(headers, ROUTING_KEY_HEADER)
    field = ROUTING_KEY_HEADER
    if not key:
        key, field = formats.body_routing_key(body), "routing_key"
    if not key:
        raise RecordRejected(
            "unknown key",
            [
                FieldError(
                    "routing_key",
                    f"is required: a {ROUTING_KEY_HEADER} header or the body's routing_key",
                )
            ],
        )
    try:
        service, _integration = auth.authenticate(config, fmt, key, field, keys)
    except InvalidInput as bad:
        raise RecordRejected("unknown key", bad.errors) from None
    try:
        return formats.normalize(fmt, body, service.id, key, received_at)
    except InvalidInput as bad:
        raise RecordRejected("invalid event", bad.errors) from None


MAX_BATCH = 2000  # records fetched at once (over all partitions)
TRACEPARENT = "traceparent"


class RawConsumer:
    """One member of the alerts.raw consumer group, batching per partition (see above)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        service: str,
        config: ConfigStore,
        publisher: AlertPublisher,
        producer: EventProducer,
        clock: Clock,
        traced: bool,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._producer = producer
        self._clock = clock
        self._traced = traced
        self._max_batch = max_batch
        self._service = service
        self._tracer = tracer(f"tocsin.{service}.consumer")
        self._keys = auth.KeyCache()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer = group_consumer(bootstrap, GROUP_ID, service)
        self._consumed = metrics.MESSAGES_CONSUMED.labels(service, ALERTS_RAW.name)
        self._seconds = metrics.PROCESSING_SECONDS.labels(service, ALERTS_RAW.name)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([ALERTS_RAW.name])

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
            except UnicodeDecodeError as error:
                await self._skip_undecodable(error)
                continue
            if not batches:
                continue
            failed = await self._complete(batches)
            if failed and not self._stopping.is_set():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    async def _complete(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> bool:
        """Process, make durable and commit fetched records; True if any record failed (its
        partition was set back to it)."""
        done: dict[TopicPartition, int] = {}
        failed = False
        for tp, records in batches.items():
            last = await self._process_partition(tp, records)
            if last >= 0:
                done[tp] = last
            failed = failed or last != records[-1].offset
        try:
            await self._producer.flush()
        except Exception:
            log.exception("alerts.raw: producing failed; going back to the batch's start")
            for tp, records in batches.items():
                self._rewind(tp, records[0].offset)
            failed, done = True, {}
        if done:
            try:
                await self._consumer.commit({tp: last + 1 for tp, last in done.items()})
            except Exception:
                # A rebalance took the partitions: their next owner starts from the
                # last commit and repeats these records (at least once).
                log.warning("alerts.raw: commit failed", exc_info=True)
        return failed

    async def _skip_undecodable(self, error: UnicodeDecodeError) -> None:
        """A record the Kafka client cannot decode (a header name that is not UTF-8; see
        tocsin_common.kafka.undecodable_record_at) fails every fetch of its partition.
        The failed fetch also took with it the records it had read before that one, of
        every partition: all partitions go back to their last commit (at least once); the
        records before the bad one are processed one at a time, so the reader stops short
        of it; the bad one is dead-lettered by its position (its bytes stay on the topic,
        the client cannot give them) and the partition moves past it."""
        try:
            await self._rewind_to_committed()
            where = undecodable_record_at(error)
            if where is None:
                log.error("alerts.raw: a record could not be decoded", exc_info=error)
                await asyncio.sleep(1.0)
                return
            tp, offset = where
            await self._complete(await self._read_up_to(tp, offset))
            if await self._consumer.position(tp) != offset:
                return  # the partition was set back (a failure) or taken away: retry later
            rejected = RecordRejected(
                "undecodable",
                [FieldError("(headers)", f"could not be decoded by the Kafka client ({error})")],
            )
            await self._dead_letter(_placeholder(tp, offset), rejected)
            await self._producer.flush()
            self._consumer.seek(tp, offset + 1)
            await self._consumer.commit({tp: offset + 1})
        except Exception:
            log.exception("alerts.raw: skipping an undecodable record failed; retrying")
            await asyncio.sleep(1.0)

    async def _rewind_to_committed(self) -> None:
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    async def _read_up_to(
        self, tp: TopicPartition, offset: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The records of ``tp`` before ``offset``, read one by one so the client never
        reaches the record at ``offset``."""
        records: list[ConsumerRecord[bytes, bytes]] = []
        while await self._consumer.position(tp) < offset and not self._stopping.is_set():
            fetched = await self._consumer.getmany(tp, timeout_ms=1000, max_records=1)
            if not fetched:
                break
            records.extend(fetched[tp])
        return {tp: records} if records else {}

    async def _process_partition(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> int:
        """Hand over one partition's records in order; the offset of the last one done
        (-1: none). On a failure the partition is set back to the record that failed."""
        last = -1
        for record in records:
            if self._stopping.is_set():
                break
            started = time.perf_counter()
            try:
                await self._process(record)
            except Exception:
                log.exception(
                    "alerts.raw: processing failed; retrying",
                    extra={"partition": record.partition, "offset": record.offset},
                )
                self._rewind(tp, record.offset)
                break
            self._consumed.inc()
            self._seconds.observe(time.perf_counter() - started)
            last = record.offset
        return last

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` again from ``offset``; a partition taken away by a rebalance since is
        left to its next owner, which starts from the last commit."""
        try:
            self._consumer.seek(tp, offset)
        except IllegalStateError:
            log.warning("alerts.raw: partition %d no longer assigned", tp.partition)

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if self._traced:
            with record_span(self._tracer, record) as span:
                try:
                    await self._handle(record)
                except RecordRejected as rejected:
                    record_error(span, rejected)
                    await self._dead_letter(record, rejected)
            return
        token = None
        if any(key == TRACEPARENT for key, _ in record.headers or ()):
            token = attach(context_from_kafka_headers(record.headers))
        try:
            await self._handle(record)
        except RecordRejected as rejected:
            await self._dead_letter(record, rejected)
        finally:
            if token is not None:
                detach(token)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        alerts = decode_record(
            record.headers, record.value, self._config.current, self._clock.now(), self._keys
        )
        # Durable before the offset is committed: run() flushes the producer first.
        await self._publisher.hand_over(alerts)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], rejected: RecordRejected
    ) -> None:
        reason = validation.safe_text(str(rejected))
        log.warning(
            "dead-lettering record",
            extra={"topic": record.topic, "offset": record.offset, "reason": reason},
        )
        await self._producer.dead_letter(ALERTS_DEADLETTER, record, reason)


def _placeholder(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    """A record standing for one the client could not decode: its position, no bytes."""
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=-1,
        timestamp_type=0, key=None, value=None, checksum=None, serialized_key_size=-1,
        serialized_value_size=-1, headers=[],
    )  # fmt: skip
