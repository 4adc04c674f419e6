"""libs/common ConsumerLoop on the real broker: the batch hooks a handler uses to record
"done" only once its records are durable (escalation stages its Redis writes this way)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import TopicPartition
from tocsin_common.kafka import ConsumerLoop, EventProducer, ensure_topics, group_consumer
from tocsin_common.topics import Topic

from tests.integration.harness import infra_from_env

RECORDS = 40


class FlushFailsOnce(EventProducer):
    """The real producer, except that its first flush reports a failed record."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, "consumer-loop-test")
        self.failed_flushes = 0

    async def flush(self) -> None:
        await super().flush()
        if self.failed_flushes == 0:
            self.failed_flushes += 1
            raise RuntimeError("a record of the batch was refused")


async def _topics() -> tuple[str, Topic, Topic, Topic]:
    bootstrap, _ = infra_from_env()
    suffix = uuid.uuid4().hex[:8]
    source = Topic(f"test.loop.in.{suffix}", 2, "n", "bytes")
    out = Topic(f"test.loop.out.{suffix}", 1, "n", "bytes")
    dead = Topic(f"test.loop.dead.{suffix}", 1, "n", "bytes")
    await ensure_topics(bootstrap, [source, out, dead])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for n in range(RECORDS):
            await producer.send(source.name, key=str(n % 2).encode(), value=str(n).encode())
        await producer.flush()
    finally:
        await producer.stop()
    return bootstrap, source, out, dead


async def test_a_batch_is_finished_only_once_durable_and_read_again_when_a_record_failed() -> None:
    bootstrap, source, out, dead = await _topics()
    producer = FlushFailsOnce(bootstrap)
    await producer.start()
    staged: list[str] = []  # handled since the last finish or abandon
    pending: list[asyncio.Future[Any]] = []
    finished: list[str] = []
    all_finished = asyncio.Event()
    abandoned: list[list[str]] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        value = (record.value or b"").decode()
        pending.append(await producer.enqueue(out, value, value.encode()))
        staged.append(value)

    async def on_durable() -> None:
        # Everything the handlers enqueued is acknowledged before the batch is finished.
        assert all(f.done() and f.exception() is None for f in pending)
        finished.extend(staged)
        if len(set(finished)) >= RECORDS:
            all_finished.set()
        staged.clear()
        pending.clear()

    def on_abandoned() -> None:
        abandoned.append(list(staged))
        staged.clear()
        pending.clear()

    group = f"test-loop-{uuid.uuid4().hex[:8]}"
    loop = ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group,
        topic=source,
        service="consumer-loop-test",
        handler=handle,
        producer=producer,
        dead_letter_topic=dead,
        max_batch=10,
        on_durable=on_durable,
        on_abandoned=on_abandoned,
    )
    await loop.start()
    runner = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(all_finished.wait(), 60)
    finally:
        await loop.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await producer.stop()

    assert producer.failed_flushes == 1
    assert len(abandoned) == 1 and abandoned[0], "the failed batch was abandoned"
    # The abandoned batch was read and finished again; nothing else ran twice.
    assert sorted(finished, key=int) == [str(n) for n in range(RECORDS)]
    assert set(abandoned[0]) <= set(finished)
    # And the group's committed offsets cover every record.
    consumer = group_consumer(bootstrap, group, "consumer-loop-test")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(source.name) or set()
        tps = [TopicPartition(source.name, p) for p in sorted(partitions)]
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        ends = await consumer.end_offsets(tps)
        assert committed == [ends[tp] for tp in tps]
    finally:
        await consumer.stop()
