"""The edge against the running stack: an accepted event is one the pipeline can process.

A body that is not JSON by its Content-Type gets 415; a client that sends its headers or
its body too slowly is cut off within the read timeout; an alerts.raw batch holding every
bad kind dead-letters each (with the reason and the original bytes) while the good records
around them flow; the deepest custom_details accepted become an incident in correlation.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record import default_records
from google.protobuf.struct_pb2 import Struct
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.validation import MAX_STRUCT_DEPTH

from tests.integration.harness import Stack
from tests.integration.test_ingest_front_door import CHECKOUT_KEY, TopicReader, post, v2

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 15.0  # the stack's alert-ingest runs with the default


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


async def test_a_body_that_is_not_json_by_content_type_gets_415(stack: Stack) -> None:
    url = f"{stack.ingest_url}/v2/enqueue"
    body = json.dumps(v2(f"edge-415-{uuid.uuid4().hex}")).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        status, answer, _ = await post(url, raw=body, headers={"Content-Type": content_type})
        assert status == 415, answer
        assert answer["fields"][0]["field"] == "Content-Type"
    status, answer, _ = await post(url, raw=body)  # application/json
    assert status == 202, answer


async def _silent_for(reader: asyncio.StreamReader, bound: float) -> tuple[bytes, float]:
    """What the server sends until it closes, and after how long."""
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), bound)
    return answer, time.monotonic() - started


async def test_slow_headers_and_slow_bodies_are_cut_off_within_the_read_timeout(
    stack: Stack,
) -> None:
    host, port = stack.ingest_url.removeprefix("http://").rsplit(":", 1)

    async def slow_headers() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\n")

        async def drip() -> None:  # a header every second, never the end of them
            while True:
                await asyncio.sleep(1)
                writer.write(b"X-Slow: 1\r\n")

        dripping = asyncio.create_task(drip())
        try:
            return await _silent_for(reader, READ_TIMEOUT_S + 10)
        finally:
            dripping.cancel()
            writer.close()

    async def slow_body() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        try:
            return await _silent_for(reader, READ_TIMEOUT_S + 10)
        finally:
            writer.close()

    (headers_answer, headers_took), (body_answer, body_took) = await asyncio.gather(
        slow_headers(), slow_body()
    )
    assert headers_answer == b""  # closed without an answer
    assert READ_TIMEOUT_S - 1 <= headers_took <= READ_TIMEOUT_S + 5
    assert body_answer.startswith(b"HTTP/1.1 408"), body_answer[:200]
    assert b"did not all arrive within 15 s" in body_answer
    assert READ_TIMEOUT_S - 1 <= body_took <= READ_TIMEOUT_S + 5
    # ... and the service keeps serving.
    status, _, _ = await post(f"{stack.ingest_url}/v2/enqueue", v2(f"edge-after-{uuid.uuid4()}"))
    assert status == 202


def _v2_text(dedup_key: str, details: str) -> bytes:
    """An Events v2 trigger with ``details`` as raw JSON text (any literal)."""
    return (
        f'{{"routing_key": "{CHECKOUT_KEY}", "event_action": "trigger", '
        f'"dedup_key": "{dedup_key}", "payload": {{"summary": "edge", "source": "raw", '
        f'"severity": "info", "custom_details": {details}}}}}'
    ).encode()


async def test_an_alerts_raw_batch_dead_letters_every_bad_kind_and_the_good_ones_flow(
    stack: Stack,
) -> None:
    alerts = TopicReader(stack.bootstrap, "alerts.normalized", alert_pb2.Alert.FromString)
    dead = TopicReader(stack.bootstrap, "alerts.deadletter", alert_pb2.DeadLetter.FromString)
    await alerts.start()
    await dead.start()
    run = uuid.uuid4().hex[:8]
    key = f"edge-raw-{run}".encode()  # one key: one partition, in this order
    v2_header = [("tocsin-format", b"events_v2")]
    bad: list[tuple[str, bytes, str]] = [  # (kind, value, what the reason says)
        ("lone surrogate", _v2_text("x", '{"s": "\\ud800"}'), "lone surrogate"),
        ("5,000 digits", _v2_text("x", '{"n": ' + "9" * 5000 + "}"), "64-bit range"),
        ("1e400", _v2_text("x", '{"n": 1e400}'), "not finite"),
        ("NaN", _v2_text("x", '{"n": NaN}'), "NaN, which JSON does not allow"),
        ("not UTF-8", _v2_text("x", '{"s": "\xe9"}').replace(b"\xc3\xa9", b"\xe9"), "UTF-8"),
        ("33 deep", _v2_text("x", json.dumps(nested(MAX_STRUCT_DEPTH + 1))), "nested 33"),
        ("800 deep", _v2_text("x", "[" * 800 + "]" * 800), "nested 801"),
        ("over 512 KB", _v2_text("x", json.dumps({"s": "x" * 600_000})), "larger than"),
        ("alert over 1 MB", _v2_text("x", "[" + ",".join(["0"] * 150_000) + "]"), "(event)"),
    ]
    good = [f"edge-raw-first-{run}", f"edge-raw-last-{run}"]
    records = [(_v2_text(good[0], "{}"), v2_header)]
    records += [(value, v2_header) for _, value, _ in bad]
    records.append((_v2_text(good[1], "{}"), v2_header))
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait("alerts.raw", value, key=key, headers=headers)
            for value, headers in records
        ]
        published = await alerts.wait_for(lambda a: a.dedup_key in good, count=2, timeout=30)
        letters = await dead.wait_for(
            lambda d: d.original_key == key,
            count=len(bad),
            timeout=30,
            distinct=lambda d: d.source_offset,
        )
    finally:
        await producer.stop()
        await alerts.stop()
        await dead.stop()
    assert {a.dedup_key for a in published} == set(good)  # the last, after every bad one
    by_offset = {d.source_offset: d for d in letters}
    for meta, (kind, value, says) in zip(sent[1:-1], bad, strict=True):
        letter = by_offset[meta.offset]
        assert says in letter.reason, (kind, letter.reason)
        if kind == "over 512 KB":
            assert "cut to its first 524,288" in letter.reason
            assert letter.original_value == value[:524_288]
        else:
            assert letter.original_value == value, kind


async def test_the_deepest_details_accepted_become_an_incident(stack: Stack) -> None:
    events = TopicReader(stack.bootstrap, "incidents.events", incident_pb2.IncidentEvent.FromString)
    await events.start()
    key = f"edge-deep-{uuid.uuid4().hex}"
    try:
        status, answer, _ = await post(
            f"{stack.ingest_url}/v2/enqueue", v2(key, custom_details=nested(MAX_STRUCT_DEPTH))
        )
        assert status == 202, answer
        (event,) = await events.wait_for(
            lambda e: (
                e.alert.dedup_key == key and e.type == incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED
            ),
            timeout=30,
        )
    finally:
        await events.stop()
    depth, value = 0, event.alert.details
    while isinstance(value, Struct):
        value = value["a"]
        depth += 1
    assert (depth, value) == (MAX_STRUCT_DEPTH, "bottom")  # carried whole


async def _produce_raw_batch(producer: AIOKafkaProducer, tp: TopicPartition, batch: bytes) -> int:
    """Write a record batch as it is, as a hand-written producer would (aiokafka's own
    producer only writes header names it can encode as UTF-8); its base offset."""
    await producer.partitions_for(tp.topic)
    leader = producer.client.cluster.leader_for_partition(tp)
    request = ProduceRequest(None, -1, 10_000, [(tp.topic, [(tp.partition, batch)])])
    response = await producer.client.send(leader, request)
    ((_, ((_, error, base_offset, *_),)),) = response.topics
    assert error == 0, response
    return int(base_offset)


async def test_a_record_the_kafka_client_cannot_decode_is_dead_lettered_and_nothing_stalls(
    stack: Stack,
) -> None:
    """A header name that is not UTF-8 makes aiokafka fail every fetch of the partition:
    before, the partition stalled for good, and the good records read in the same fetch
    (of any partition) were skipped. Now the bad record is dead-lettered by its position
    and every good record around it, in its partition and others, becomes an alert."""
    alerts = TopicReader(stack.bootstrap, "alerts.normalized", alert_pb2.Alert.FromString)
    dead = TopicReader(stack.bootstrap, "alerts.deadletter", alert_pb2.DeadLetter.FromString)
    await alerts.start()
    await dead.start()
    run = uuid.uuid4().hex[:8]
    key = f"edge-header-{run}".encode()
    header = [("tocsin-format", b"events_v2")]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        first = await producer.send_and_wait(
            "alerts.raw", _v2_text(f"hk-first-{run}", "{}"), key=key, headers=header
        )
        tp = TopicPartition("alerts.raw", first.partition)
        others = [f"hk-other-{run}-{i}" for i in range(12)]  # other keys: other partitions
        for dedup in others:
            await producer.send_and_wait("alerts.raw", _v2_text(dedup, "{}"),
                                         key=dedup.encode(), headers=header)  # fmt: skip
        bad = await _produce_raw_batch(producer, tp, _batch_with_a_bad_header_name(run)) + 1
        last = await producer.send_and_wait(
            "alerts.raw", _v2_text(f"hk-last-{run}", "{}"), key=key, headers=header
        )
        good = {f"hk-first-{run}", f"hk-last-{run}", *others, f"hk-before-{run}"}
        published = await alerts.wait_for(
            lambda a: a.dedup_key in good, count=len(good), timeout=60,
            distinct=lambda a: a.dedup_key,
        )  # fmt: skip
        letters = await dead.wait_for(lambda d: d.source_partition == tp.partition
                                      and first.offset < d.source_offset < last.offset)  # fmt: skip
    finally:
        await producer.stop()
        await alerts.stop()
        await dead.stop()
    assert {a.dedup_key for a in published} == good
    # at least once: a letter may come twice, always for the bad record alone
    assert {d.source_offset for d in letters} == {bad}
    letter = letters[0]
    assert "could not be decoded by the Kafka client" in letter.reason
    assert letter.original_value == b""  # the client cannot give its bytes; Kafka keeps them


def _batch_with_a_bad_header_name(run: str) -> bytes:
    """A good record, then one whose header name is not UTF-8, in one batch."""

    class NotUtf8(str):
        def encode(self, *args: Any, **kwargs: Any) -> bytes:
            return b"\xff\xfe"

    builder = default_records._DefaultRecordBatchBuilderPy(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1_000_000,
    )  # fmt: skip
    header = ("tocsin-format", b"events_v2")
    builder.append(0, timestamp=None, key=None, value=_v2_text(f"hk-before-{run}", "{}"),
                   headers=[header])  # fmt: skip
    builder.append(1, timestamp=None, key=None, value=_v2_text(f"hk-bad-{run}", "{}"),
                   headers=[header, (NotUtf8("x"), b"1")])  # fmt: skip
    return bytes(builder.build())
