"""The notifications.requests consumer: records are processed concurrently (one person's
page never waits behind another's retries or bundling window), and an offset is committed
only once every record before it has a final, recorded outcome (at-least-once; the
idempotency stage makes it exactly-once in effect). The pipeline only hands its status and
timeline records to the producer; a record counts as finished once they are acknowledged,
so the producer batches the records of many pages and no page waits for another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord
from aiokafka.structs import TopicPartition
from tocsin_common import metrics
from tocsin_common.kafka import BadRecord, EventProducer, group_consumer
from tocsin_common.topics import Topic
from tocsin_common.tracing import record_error, record_span, tracer

from tocsin_notification.offsets import OffsetTracker

log = logging.getLogger("tocsin.notification.consumer")

# Processes one record; returns the acknowledgements of the records it produced.
Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[Sequence[asyncio.Future[Any]]]]


class ConcurrentConsumer:
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
        max_in_flight: int = 1000,
    ) -> None:
        self._topic = topic
        self._service = service
        self._handler = handler
        self._producer = producer
        self._dead_letter_topic = dead_letter_topic
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tracer = tracer(f"tocsin.{service}.consumer")
        # The labelled children, looked up once rather than per record.
        self._consumed = metrics.MESSAGES_CONSUMED.labels(service, topic.name)
        self._processing = metrics.PROCESSING_SECONDS.labels(service, topic.name)
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.joined = asyncio.Event()
        self._consumer = group_consumer(bootstrap, group_id, service)

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic.name], listener=_Listener(self))

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._commit()
        await self._consumer.stop()

    async def run(self) -> None:
        committer = asyncio.create_task(self._commit_periodically())
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, records in batches.items():
                    tracker = self._trackers.setdefault(tp, OffsetTracker())
                    for record in records:
                        await self._slots.acquire()
                        tracker.started(record.offset)
                        task = asyncio.create_task(self._process(tp, tracker, record))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        finally:
            committer.cancel()

    async def _process(
        self, tp: TopicPartition, tracker: OffsetTracker, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        try:
            backoff = 0.1
            while not self._stopping.is_set():
                with record_span(self._tracer, record) as span:
                    started = time.perf_counter()
                    try:
                        # The outcome is final and recorded; its Kafka records must be
                        # acknowledged too before the offset may be committed.
                        await asyncio.gather(*await self._handler(record))
                    except BadRecord as bad:
                        record_error(span, bad)
                        log.warning(
                            "dead-lettering record",
                            extra={"offset": record.offset, "reason": str(bad)},
                        )
                        await self._producer.dead_letter(self._dead_letter_topic, record, str(bad))
                        break
                    except Exception as error:  # Redis or Kafka failed: try the record again
                        record_error(span, error)
                        log.exception(
                            "processing failed; retrying", extra={"offset": record.offset}
                        )
                    else:
                        self._consumed.inc()
                        self._processing.observe(time.perf_counter() - started)
                        break
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                return  # stopping: leave the offset uncommitted
            tracker.finished(record.offset)
        finally:
            self._slots.release()

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self._commit()
            except Exception:
                log.warning("offset commit failed; will retry", exc_info=True)

    async def _commit(self) -> None:
        assigned = set(self._consumer.assignment())
        offsets: dict[TopicPartition, int] = {}
        for tp, tracker in self._trackers.items():
            offset = tracker.committable()
            if tp in assigned and offset is not None and self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)

    def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._trackers.pop(tp, None)
            self._committed.pop(tp, None)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: ConcurrentConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(Exception):
            await self._owner._commit()
        self._owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.joined.set()
