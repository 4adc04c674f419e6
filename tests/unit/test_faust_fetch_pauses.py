"""The aiokafka client fetches only the partitions faust reads (faustapp._fetch_records):
its pause state follows faust's active set."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from tocsin_common import faustapp
from tocsin_common.settings import Settings


def test_partitions_faust_does_not_read_are_paused_and_those_it_reads_resumed() -> None:
    a0, a1, c0, c1 = (TopicPartition(t, p) for t in ("in", "in-changelog") for p in (0, 1))
    assigned = {a0, a1, c0, c1}
    # faust's own TP type in its active set: equal as tuples
    to_pause, to_resume = faustapp.fetch_pauses(assigned, {a1}, {TP("in", 0), TP("in", 1)})
    assert sorted(to_pause) == [c0, c1]
    assert to_resume == [a1]
    assert all(type(tp) is TopicPartition for tp in to_pause + to_resume)
    # nothing to change
    assert faustapp.fetch_pauses(assigned, {c0, c1}, {a0, a1}) == ([], [])


async def test_the_client_pause_state_follows_fausts_active_set() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")  # never started
    parts = [TopicPartition(t, p) for t in ("in", "in-changelog") for p in range(3)]
    consumer.assign(parts)
    inputs = {TP("in", p) for p in range(3)}
    faustapp._pause_inactive(consumer, inputs)
    assert consumer.paused() == {TopicPartition("in-changelog", p) for p in range(3)}
    # recovery: the changelogs are read again
    faustapp._pause_inactive(consumer, inputs | {TP("in-changelog", p) for p in range(3)})
    assert consumer.paused() == set()
    # a stream's buffer is full: faust stops reading that partition, so does the client
    faustapp._pause_inactive(consumer, {TP("in", 0)})
    assert consumer.paused() == set(parts) - {TopicPartition("in", 0)}
    # faust changes its active set in place
    active = set(inputs)
    faustapp._pause_inactive(consumer, active)
    active.discard(TP("in", 2))
    faustapp._pause_inactive(consumer, active)
    assert TopicPartition("in", 2) in consumer.paused()
    # a rebalance: a new assignment, every partition unpaused; the same active set pauses
    # the changelogs again
    consumer.assign(parts)
    assert consumer.paused() == set()
    faustapp._pause_inactive(consumer, active)
    assert consumer.paused() == {TopicPartition("in-changelog", p) for p in range(3)} | {
        TopicPartition("in", 2)
    }
    await consumer.stop()


async def test_fausts_fetch_pauses_first_then_fetches_what_faust_reads(
    monkeypatch: Any,
) -> None:
    calls: list[tuple[str, Any]] = []

    async def faust_fetch(
        self: Any, consumer: Any, active: Any, timeout: Any = None, max_records: Any = None
    ) -> dict[Any, Any]:
        calls.append(("fetch", set(consumer.paused())))
        return {}

    monkeypatch.setattr(faustapp, "_faust_fetch_records", faust_fetch)
    assert AIOKafkaConsumerThread._fetch_records is faustapp._fetch_records
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    consumer.assign([TopicPartition("in", 0), TopicPartition("in-changelog", 0)])
    thread: Any = type("Thread", (), {})()
    thread.consumer = type("Faust", (), {"flow_active": True})()
    await faustapp._fetch_records(thread, consumer, {TP("in", 0)}, timeout=1.0)
    assert calls == [("fetch", {TopicPartition("in-changelog", 0)})]
    # the flow stopped (rebalancing): the pause state is left as it is
    thread.consumer.flow_active = False
    await faustapp._fetch_records(thread, consumer, {TP("in-changelog", 0)}, timeout=1.0)
    assert calls[-1] == ("fetch", {TopicPartition("in-changelog", 0)})
    await consumer.stop()
    await asyncio.sleep(0)


def test_workers_keep_no_standby_tables(tmp_path: Any) -> None:
    settings = Settings.from_env(
        "correlation",
        {"TOCSIN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TOCSIN_DATA_DIR": str(tmp_path)},
    )
    app = faustapp.make_app(settings, "standby-test")
    assert app.conf.table_standby_replicas == 0
