"""Offsets correlation's input partitions jump over where the broker has no record to give
(transaction markers, records deleted at the head): the worker moves over them, without
seeking back again and again, and keeps making incidents. Against the real broker.

corr-gap is in maintenance: its incidents are recorded (SUPPRESSED), never paged."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from tocsin.v1 import incident_pb2

from tests.integration.harness import Stack
from tests.integration.test_correlation_stories import Event, events_until, new_alert, produce

pytestmark = pytest.mark.integration
SERVICE = "corr-gap"
TOPIC = "alerts.normalized"


async def _metric(stack: Stack, name: str) -> float:
    """The correlation worker's counter `name` for alerts.normalized (0 when absent)."""
    port = stack.services["correlation"].env["TOCSIN_METRICS_PORT"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'topic="{TOPIC}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _incidents_for(keys: set[str]) -> Callable[[list[Event]], bool]:
    def done(events: list[Event]) -> bool:
        seen = {e.alert.dedup_key for e in events if e.incident.incident_id}
        return keys <= seen

    return done


async def test_offsets_of_transaction_markers_are_moved_over(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    rereads = await _metric(stack, "tocsin_correlation_rereads_total")
    gaps = await _metric(stack, "tocsin_correlation_offset_gaps_accepted_total")
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, transactional_id=f"tocsin-gap-test-{run}"
    )
    await producer.start()
    alerts = [new_alert(SERVICE, f"tx-{run}-{i}") for i in range(20)]
    try:
        # One transaction per alert: each commit leaves a marker at the next offset.
        for alert in alerts:
            async with producer.transaction():
                await producer.send_and_wait(TOPIC, alert.SerializeToString(), key=SERVICE.encode())
    finally:
        await producer.stop()

    keys = {a.dedup_key for a in alerts}
    events = await events_until(stack, SERVICE, _incidents_for(keys), timeout=20)
    suppressed = {
        e.alert.dedup_key
        for e in events
        if e.type == incident_pb2.INCIDENT_EVENT_TYPE_SUPPRESSED and e.alert.dedup_key in keys
    }
    assert suppressed == keys  # an incident for every alert
    # Every marker after an alert is a gap moved over, none read again.
    assert await _metric(stack, "tocsin_correlation_offset_gaps_accepted_total") >= gaps + 19
    assert await _metric(stack, "tocsin_correlation_rereads_total") == rereads


async def test_records_deleted_before_the_worker_read_them_are_moved_over(stack: Stack) -> None:
    """A worker that falls behind the log start (retention, kafka-delete-records): the
    records it was to read next are gone; the next ones are processed."""
    run = uuid.uuid4().hex[:8]
    worker = stack.services["correlation"]
    assert worker.proc is not None
    # The worker has processed a record of the partition: it expects the next offset.
    first = new_alert(SERVICE, f"del-{run}-first")
    await produce(stack, first)
    await events_until(stack, SERVICE, _incidents_for({first.dedup_key}), timeout=20)
    rereads = await _metric(stack, "tocsin_correlation_rereads_total")
    gaps = await _metric(stack, "tocsin_correlation_offset_gaps_accepted_total")

    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await producer.start()
    await admin.start()
    deleted = [new_alert(SERVICE, f"del-{run}-gone-{i}") for i in range(5)]
    kept = [new_alert(SERVICE, f"del-{run}-kept-{i}") for i in range(5)]
    os.killpg(worker.proc.pid, signal.SIGSTOP)  # well within the 10 s session timeout
    try:
        # Past faust's fetch wait (1.5 s): the pending fetch has been answered, empty.
        await asyncio.sleep(2)
        metadata = None
        for alert in deleted:
            metadata = await producer.send_and_wait(
                TOPIC, alert.SerializeToString(), key=SERVICE.encode()
            )
        assert metadata is not None
        tp = TopicPartition(TOPIC, metadata.partition)
        await admin.delete_records({tp: RecordsToDelete(metadata.offset + 1)})
        for alert in kept:
            await producer.send_and_wait(TOPIC, alert.SerializeToString(), key=SERVICE.encode())
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
        await admin.close()
        await producer.stop()

    keys = {a.dedup_key for a in kept}
    events = await events_until(stack, SERVICE, _incidents_for(keys), timeout=20)
    assert not {e.alert.dedup_key for e in events} & {a.dedup_key for a in deleted}
    assert await _metric(stack, "tocsin_correlation_offset_gaps_accepted_total") == gaps + 1
    assert await _metric(stack, "tocsin_correlation_rereads_total") == rereads  # no seek back
    # And it keeps going.
    after = new_alert(SERVICE, f"del-{run}-after")
    await produce(stack, after)
    await events_until(stack, SERVICE, _incidents_for({after.dedup_key}), timeout=10)
