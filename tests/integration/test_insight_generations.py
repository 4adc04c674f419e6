"""Generations against the real Kafka and PostgreSQL: a generation completes when every
partition's end offset is reached even when the partition ends in a transaction's commit
marker or its records were deleted before they were read (the consumer's position, not the
last record, says how far it got); a switch to a new generation drops the older ones but
the one that served before it."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from tocsin_common.transport import KafkaSecurity, PostgresConnection
from tocsin_insight import schema, store
from tocsin_insight.facts import Directory
from tocsin_insight.ingest import FactConsumer
from tocsin_insight.service import end_offsets
from tocsin_insight.store import FactStore

from tests.integration.test_insight_store import connect, database

pytestmark = pytest.mark.integration

__all__ = ["database"]  # the scratch-database fixture, used by name


def bootstrap() -> str:
    return os.environ["TOCSIN_KAFKA_BOOTSTRAP"]


async def scratch_topic(partitions: int = 1) -> str:
    name = f"insight-gen-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def fill_until_complete(
    conn: psycopg.AsyncConnection[Any], topic: str, polls: int = 20
) -> tuple[str, dict[tuple[str, int], int], bool]:
    """A new generation with the topic's end offsets as its targets, filled by a replay's
    consumer for at most ``polls`` polls; (generation, targets, caught up)."""
    generation = await schema.create_generation(conn, 1)
    targets = await end_offsets(bootstrap(), KafkaSecurity(), [topic])
    await store.set_targets(conn, generation, targets)

    async def fixed() -> str:
        return generation

    consumer = FactConsumer(
        AIOKafkaConsumer(
            bootstrap_servers=bootstrap(),
            enable_auto_commit=False,
            isolation_level="read_committed",
        ),
        FactStore(conn, Directory()),
        fixed,
        Directory,
        None,
    )
    await consumer.start_assigned(TopicPartition(t, p) for t, p in targets)
    try:
        for _ in range(polls):
            if await store.caught_up(conn, generation):
                return generation, targets, True
            await consumer.poll_once(timeout_ms=300)
        return generation, targets, await store.caught_up(conn, generation)
    finally:
        await consumer.stop()


async def test_a_partition_ending_in_a_commit_marker_completes(
    database: PostgresConnection,
) -> None:
    topic = await scratch_topic()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap(), transactional_id=f"insight-test-{uuid.uuid4().hex[:6]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send_and_wait(topic, f"record {i}".encode(), partition=0)
    finally:
        await producer.stop()
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        generation, targets, complete = await fill_until_complete(conn, topic)
        # Offsets 0-2 are the records, 3 the commit marker: the end offset is 4.
        assert targets == {(topic, 0): 4}
        assert complete, "the generation reached the end offset past the marker"
        cur = await conn.execute(
            f"SELECT next_offset FROM insight_{generation}.offsets WHERE topic = %s", (topic,)
        )
        assert await cur.fetchall() == [(4,)]
        # The three records were read (not insight's topics: dead letters, once each).
        cur = await conn.execute(
            "SELECT count(*) FROM insight_dead_letters WHERE topic = %s", (topic,)
        )
        assert (await cur.fetchone()) == (3,)
    finally:
        await conn.close()


async def test_a_partition_whose_records_were_deleted_completes(
    database: PostgresConnection,
) -> None:
    topic = await scratch_topic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap())
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"record {i}".encode(), partition=0)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:  # retention got there first: the log starts at 3, where it ends
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(3)})
    finally:
        await admin.close()
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        _, targets, complete = await fill_until_complete(conn, topic)
        assert targets == {(topic, 0): 3}
        assert complete, "nothing left to read: complete at the log's start"
    finally:
        await conn.close()


async def test_a_switch_drops_older_generations_but_the_one_before(
    database: PostgresConnection,
) -> None:
    conn = await connect(database)
    try:
        await schema.migrate(conn)
        boot = await schema.ensure_serving(conn, 1)
        names = []
        for _ in range(4):
            name = await schema.create_generation(conn, 1)
            await store.mark_complete(conn, name, datetime.now(UTC))
            names.append(name)
        await schema.serve_generation(conn, names[1])
        dropped = await schema.retire_generations(conn)
        # names[0] (complete, never served) goes; boot, serving before names[1], stays.
        assert names[0] in dropped and boot not in dropped and names[1] not in dropped
        # names[3] serves after names[1]: names[1] stays (retention of one); boot and
        # names[2] go.
        await schema.serve_generation(conn, names[3])
        cur = await conn.execute("SELECT previous FROM insight_serving")
        assert (await cur.fetchone()) == (names[1],)
        assert await schema.retire_generations(conn) == sorted(
            [boot, names[2]], key=lambda n: int(n[1:])
        )
        cur = await conn.execute("SELECT name FROM insight_generations")
        assert sorted(r[0] for r in await cur.fetchall()) == sorted([names[1], names[3]])
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'insight\\_g%'"
        )
        assert sorted(r[0] for r in await cur.fetchall()) == sorted(
            f"insight_{n}" for n in (names[1], names[3])
        )
        assert await schema.retire_generations(conn) == []  # nothing more to drop
    finally:
        await conn.close()
