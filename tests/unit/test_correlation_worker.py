"""The correlation worker's hot path, without a broker: batches taken from the consumer's
queue, and the shortcuts that must say exactly what the general code says (derived ids,
timestamps, changelog bytes, trace context without spans)."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.utils import json as faust_json
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from tocsin_common.faustapp import worker_event_loop
from tocsin_common.timeutil import set_timestamp
from tocsin_common.tracing import forwarded_kafka_headers, kafka_headers
from tocsin_correlation import engine, worker
from tocsin_correlation.worker import TABLES, CorrelationWorker, changelog_codec


def test_derived_ids_are_uuid5_of_the_joined_parts() -> None:
    rng = random.Random(7)
    for i in range(2000):
        parts = [str(uuid.UUID(int=rng.getrandbits(128))), rng.choice(["alert", "ü☃", ""])]
        parts = parts[: rng.randint(1, 2)] + [str(i)] * rng.randint(0, 1)
        expected = str(uuid.uuid5(engine._NAMESPACE, "\x1f".join(parts)))
        assert engine.derived_id(*parts) == expected


def test_epoch_stamps_are_set_timestamp_of_the_datetime() -> None:
    rng = random.Random(11)
    epochs = [0.0, -0.0, 1.5, -1.5, -1e-7, 1_790_000_000.123456, 1_790_000_000.9999995]
    epochs += [-62_135_596_800.0, 253_402_300_799.5]  # near the ends of datetime's range
    epochs += [rng.uniform(-1e10, 1e10) for _ in range(2000)]
    # halfway between two microseconds (as near as a float gets): datetime rounds to even
    epochs += [
        rng.randrange(2_000_000_000) + (rng.randrange(10**6) + 0.5) / 1e6 for _ in range(2000)
    ]
    for epoch in epochs:
        fast, again, slow = Timestamp(), Timestamp(), Timestamp()
        engine._set_epoch(fast, epoch)
        engine._set_epoch(again, epoch)  # the stamp it remembers
        set_timestamp(slow, datetime.fromtimestamp(epoch, UTC))
        assert fast == slow and again == slow, epoch
    # outside the range (and not a number): the error the datetime path raises
    for epoch in (253_402_300_799.9999996, 1e20, -1e20, float("nan"), float("inf")):
        with pytest.raises((ValueError, OverflowError)) as fast_error:
            engine._set_epoch(Timestamp(), epoch)
        with pytest.raises((ValueError, OverflowError)) as slow_error:
            set_timestamp(Timestamp(), datetime.fromtimestamp(epoch, UTC))
        assert fast_error.type is slow_error.type, epoch


def _incident_by_keywords(state: engine.IncidentState) -> Any:
    """The incident message as the protobuf constructor makes it from every field: what
    write_proto's field-by-field shortcut must equal."""
    from tocsin.v1 import incident_pb2
    from tocsin_correlation.changes import ChangeRecord

    incident = incident_pb2.Incident(
        incident_id=state.incident_id,
        service_id=state.service_id,
        title=state.title,
        status={"triggered": 1, "acknowledged": 2, "resolved": 3}[state.status],
        urgency=incident_pb2.URGENCY_HIGH if state.urgency == "high" else incident_pb2.URGENCY_LOW,
        severity=state.severity,
        group_key=state.group_key,
        escalation_policy_id=state.escalation_policy_id,
        alert_count=len(state.alert_keys),
        open_alert_count=len(state.open_alert_keys),
        dedup_keys=[k.split("\x1f", 1)[1] for k in state.alert_keys],
        labels=state.labels,
        assigned_user_id=state.assigned_user_id,
        held_by_incident_id=state.held_by_incident_id,
        flapping=state.flapping,
        suppressed=state.suppressed,
        suppressed_reason=state.suppressed_reason,
        probable_causes=[
            incident_pb2.ProbableCause(
                change=ChangeRecord.from_json(c["change"]).event(),
                rank=c["rank"],
                reason=c["reason"],
            )
            for c in state.probable_causes
        ],
    )
    for name in ("created_at", "updated_at", "resolved_at", "snoozed_until"):
        epoch = getattr(state, name)
        if epoch is not None:
            set_timestamp(getattr(incident, name), datetime.fromtimestamp(epoch, UTC))
    return incident


def test_incidents_written_field_by_field_equal_the_constructors() -> None:
    from tocsin.v1 import alert_pb2
    from tocsin_correlation.changes import ChangeRecord

    change = ChangeRecord.from_event(
        alert_pb2.ChangeEvent(event_id="c1", service_id="db", summary="deploy 42"), 1.7e9
    )
    plain = engine.IncidentState(
        incident_id="i1",
        service_id="db",
        title="",
        status="triggered",
        urgency="low",
        severity=0,
        group_key="",
        escalation_policy_id="pol",
        created_at=1_790_000_000.25,
        updated_at=1_790_000_001.5,
    )
    everything = engine.IncidentState(
        incident_id="i2",
        service_id="db",
        title="Disk full",
        status="resolved",
        urgency="high",
        severity=alert_pb2.SEVERITY_ERROR,
        group_key="content:abc",
        escalation_policy_id="pol",
        created_at=1_790_000_000.123456,
        updated_at=1_790_000_100.0,
        alert_keys=["db\x1fh1", "db\x1fh2\x1fwith separator"],
        open_alert_keys=["db\x1fh2\x1fwith separator"],
        labels={"alertname": "DiskFull", "host": "h1"},
        resolved_at=1_790_000_200.5,
        assigned_user_id="alice",
        snoozed_until=1_790_003_600.0,
        held_by_incident_id="i0",
        flapping=True,
        suppressed=True,
        suppressed_reason="silenced by s1",
        probable_causes=[{"change": change.to_json(), "rank": 1, "reason": "same service"}],
    )
    for state in (plain, everything):
        written = state.to_proto()
        assert written == _incident_by_keywords(state)
        assert written.SerializeToString(deterministic=True) == _incident_by_keywords(
            state
        ).SerializeToString(deterministic=True)


def test_changelog_bytes_are_fausts_own() -> None:
    app = faust.App("changelog-test", broker="kafka://127.0.0.1:1", store="memory://")
    values: list[Any] = [
        {"incident_id": "i", "labels": {"ü": "☃"}, "at": 1.25, "none": None, "l": [1, "a"]},
        "6f1c3c1e-3f5e-4d5c-9a55-7c0e8a3b9d10",
        [{"change": {"id": "c"}, "rank": 1}],
        {"holder": "h", "holder_service": "s", "service_id": "t"},
        {"f": [0.1, 1e-07, 1790000000.123456, -0.0, 12345678901234567890], "t": True},
        {"s": 'quote " backslash \\ tab \t nl \n \x1f \u2028 😀', "e": {}, "n": []},
    ]
    for name in TABLES:  # made as the worker makes them
        table: Any = app.Table(name, default=None, partitions=12)
        topic, dump_key, dump_value = changelog_codec(table)
        changelog = table.changelog_topic
        assert topic == changelog.get_topic_name() == f"changelog-test-{name}-changelog"
        for key in ("svc\x1fkey", "ü-key"):
            assert dump_key(key) == changelog.prepare_key(key, table.key_serializer)[0]
        for value in values:
            raw = dump_value(value)
            assert raw == changelog.prepare_value(value, table.value_serializer)[0]
            # and what faust's recovery makes of them is the value written
            assert (
                app.serializers.loads_value(None, raw, serializer=table.value_serializer) == value
            )


def test_faust_serializes_json_with_orjson() -> None:
    # requirements.txt pins orjson for this: faust's json codec is the stdlib's without it,
    # which cost a sixth of a correlation worker's CPU in its changelogs
    assert faust_json.orjson is not None
    assert isinstance(faust_json.dumps({"a": 1}), bytes)


def test_without_spans_the_consumed_trace_context_is_forwarded() -> None:
    context = SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1)
    )
    with trace.use_span(NonRecordingSpan(context)):
        consumed = kafka_headers([("other", b"x")])
    forwarded = forwarded_kafka_headers(consumed)
    assert dict(forwarded)["traceparent"] == dict(consumed)["traceparent"]
    assert "other" not in dict(forwarded)
    assert forwarded_kafka_headers(dict(consumed)) == forwarded
    assert forwarded_kafka_headers(None) == [] and forwarded_kafka_headers([]) == []


# --- batches --------------------------------------------------------------------------


def _record(offset: int, generation: int = 1) -> Any:
    return SimpleNamespace(tp=("alerts.normalized", 0), offset=offset, generation_id=generation)


def _taker(active: bool = True) -> Any:
    """A worker with only what taking batches reads: the app's flow and generation."""
    app = SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: active),
        consumer_generation_id=1,
        monitor=SimpleNamespace(stream_inbound_time={}),
    )
    taker: Any = object.__new__(CorrelationWorker)
    taker.app = app
    return taker


async def test_a_batch_is_what_was_delivered_up_to_the_maximum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "BATCH_MAX", 3)
    monkeypatch.setattr(worker, "BATCH_WITHIN_S", 0.0)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for offset in range(5):
        queue.put_nowait(_record(offset))
    taker = _taker()

    first = await taker._take(queue)
    second = await taker._take(queue)

    assert [r.offset for r in first] == [0, 1, 2]
    assert [r.offset for r in second] == [3, 4]
    assert ("alerts.normalized", 0) in taker.app.monitor.stream_inbound_time


async def test_a_batch_waits_for_its_first_event_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "BATCH_WITHIN_S", 0.0)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    taker = _taker()
    taking = asyncio.ensure_future(taker._take(queue))
    await asyncio.sleep(0.01)
    assert not taking.done()
    queue.put_nowait(_record(7))
    assert [r.offset for r in await asyncio.wait_for(taking, 1)] == [7]


def test_a_batch_lingers_only_under_load() -> None:
    linger = worker.batch_linger
    assert linger(previous=1, taken=1, within_s=0.005, linger_from=50, batch_max=500) == 0.0
    assert linger(previous=49, taken=3, within_s=0.005, linger_from=50, batch_max=500) == 0.0
    assert linger(previous=50, taken=3, within_s=0.005, linger_from=50, batch_max=500) == 0.005
    # full already, or lingering turned off
    assert linger(previous=500, taken=500, within_s=0.005, linger_from=50, batch_max=500) == 0
    assert linger(previous=500, taken=3, within_s=0.0, linger_from=50, batch_max=500) == 0


async def test_at_a_low_rate_a_batch_is_taken_without_waiting_under_load_it_lingers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "BATCH_WITHIN_S", 0.05)
    monkeypatch.setattr(worker, "BATCH_LINGER_FROM", 3)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    taker = _taker()
    queue.put_nowait(_record(0))
    late = asyncio.get_running_loop().call_later(0.02, queue.put_nowait, _record(1))
    assert [r.offset for r in await taker._take(queue)] == [0]  # did not wait for 1
    assert [r.offset for r in await taker._take(queue)] == [1]
    late.cancel()
    # a backlog: the batch before had 3 inputs, so this one waits for the late one
    for offset in (2, 3, 4):
        queue.put_nowait(_record(offset))
    assert [r.offset for r in await taker._take(queue)] == [2, 3, 4]
    queue.put_nowait(_record(5))
    asyncio.get_running_loop().call_later(0.01, queue.put_nowait, _record(6))
    assert [r.offset for r in await taker._take(queue)] == [5, 6]


async def test_events_of_an_old_generation_or_a_stopped_flow_are_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "BATCH_WITHIN_S", 0.0)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for record in (_record(0, generation=0), _record(1), _record(2, generation=0)):
        queue.put_nowait(record)
    assert [r.offset for r in await _taker()._take(queue)] == [1]

    queue.put_nowait(_record(3))
    assert await _taker(active=False)._take(queue) == []


@pytest.mark.parametrize(("choice", "kind"), [("uvloop", "uvloop.Loop"), ("asyncio", "asyncio")])
def test_the_worker_and_its_threads_run_on_the_services_loop(choice: str, kind: str) -> None:
    def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
        name = f"{type(loop).__module__}.{type(loop).__qualname__}"
        return "uvloop.Loop" if name == "uvloop.Loop" else name.split(".")[0]

    kinds: list[str] = []
    try:
        loop = worker_event_loop({"TOCSIN_EVENT_LOOP": choice})
        kinds.append(loop_kind(loop))
        # as faust's consumer thread makes its loop (mode's ServiceThread)
        thread = threading.Thread(target=lambda: kinds.append(loop_kind(asyncio.new_event_loop())))
        thread.start()
        thread.join()
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)
    assert kinds == [kind, kind]


# --- sending a batch's records --------------------------------------------------------


class _FakeBuilder:
    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: Any, headers: Any) -> Any:
        if len(self.records) == self.room:
            return None
        self.records.append((key, value, headers))
        return object()


class _FakeProducer:
    """What BatchSender uses of aiokafka's producer: metadata, builders, send_batch."""

    def __init__(self, partitions: int, room: int) -> None:
        self.partitions = set(range(partitions))
        self.room = room
        self.client = SimpleNamespace(
            cluster=SimpleNamespace(partitions_for_topic=lambda topic: self.partitions)
        )
        self.sent: list[tuple[str, int, list[Any]]] = []

    def create_batch(self) -> _FakeBuilder:
        return _FakeBuilder(self.room)

    async def send_batch(self, builder: _FakeBuilder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, builder.records))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_batched_records_go_where_kafkas_partitioner_puts_their_keys_in_order() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    sender = worker.BatchSender("127.0.0.1:1")
    fake = sender._producer = _FakeProducer(partitions=12, room=3)  # type: ignore[assignment]
    rng = random.Random(5)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(40)]
    records = [
        worker.Output("incidents.events", keys[i % 40], f"v{i}".encode(), [("h", b"%d" % i)])
        for i in range(200)
    ]
    records.insert(7, worker.Output("t-changelog", b"k", None, [], partition=5))

    await sender.wait(await sender.submit(records))

    placed: dict[tuple[str, int], list[Any]] = {}
    for topic, partition, batch in fake.sent:
        assert 0 < len(batch) <= 3  # a full record batch is sent, the rest go in another
        placed.setdefault((topic, partition), []).extend(batch)
    assert placed[("t-changelog", 5)] == [(b"k", None, [])]
    everything = sorted(range(12))
    for partition in range(12):
        expected = [
            (r.key, r.value, r.headers)
            for r in records
            if r.topic == "incidents.events"
            and DefaultPartitioner()(r.key, everything, everything) == partition
        ]
        assert placed.get(("incidents.events", partition), []) == expected  # same order


async def test_a_batch_that_failed_is_sent_again_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.errors import KafkaTimeoutError

    monkeypatch.setattr(worker, "RETRY_FIRST_S", 0.0)
    submitted: list[list[Any]] = []

    class FailingOnce:
        async def submit(self, records: Any) -> Any:
            submitted.append(list(records))
            future = asyncio.get_running_loop().create_future()
            if len(submitted) == 1:
                future.set_exception(KafkaTimeoutError())
            else:
                future.set_result(None)
            return [future]

        wait = staticmethod(worker.BatchSender.wait)

    sending: Any = object.__new__(CorrelationWorker)
    sending._batch_sender = FailingOnce()
    records = [worker.Output("incidents.events", b"k%d" % i, b"v", []) for i in range(5)]

    await sending._send_durably(records, "events", await sending._submit(records))

    assert submitted == [records, records]


# --- inputs within a batch ------------------------------------------------------------

GROUPED_CONFIG = """\
version: 1
services:
  - id: db
    name: Database
    escalation_policy: pol
    grouping: {mode: content, fields: [labels.alertname], window: 10m}
users:
  - {id: alice, name: Alice, email: alice@example.com}
escalation_policies:
  - id: pol
    name: Policy
    levels:
      - {delay: 5m, targets: [{type: user, id: alice}]}
"""


def _processor() -> Any:
    """A worker with only what processing inputs reads, over dict tables."""
    processor: Any = object.__new__(CorrelationWorker)
    processor.tables = {name: {} for name in TABLES}
    processor._spans = False
    processor._consumed_counters = {}
    processor.silences = []
    processor._upstreams = (0, frozenset())
    return processor


def _alert_input(event_id: str, host: str, offset: int) -> Any:
    from tocsin.v1 import alert_pb2

    alert = alert_pb2.Alert(
        event_id=event_id,
        service_id="db",
        dedup_key=host,
        action=alert_pb2.ALERT_ACTION_TRIGGER,
        summary=f"disk full on {host}",
        labels={"alertname": "DiskFull"},
    )
    return SimpleNamespace(
        topic="alerts.normalized",
        partition=3,
        offset=offset,
        key=b"db",
        value=alert.SerializeToString(),
        headers=[],
    )


async def test_an_input_that_fails_half_way_leaves_nothing_in_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tocsin.v1 import incident_pb2
    from tocsin_common.config import parse_config

    monkeypatch.setattr(worker, "RETRY_FIRST_S", 0.0)
    config = parse_config(GROUPED_CONFIG, "tocsin.yaml")
    processor = _processor()
    batch = worker.Batch(processor.tables)
    emit = batch.engine._emit
    failures = {"e2": ValueError("poison"), "e3": OSError("redis went away")}

    def emit_then_fail(incident: Any, event_type: int, alert: Any, *args: Any, **kw: Any) -> Any:
        outcome = emit(incident, event_type, alert, *args, **kw)  # the writes are made
        error = failures.pop(alert.event_id, None)
        if error is not None:
            raise error
        return outcome

    monkeypatch.setattr(batch.engine, "_emit", emit_then_fail)
    for offset, (event_id, host) in enumerate([("e1", "h1"), ("e2", "h2"), ("e3", "h3")]):
        await processor._process_input(batch, _alert_input(event_id, host, offset), config)

    # e2 failed after writing its alert and the incident: dead-lettered, its writes undone;
    # e3 failed once on a store (retried in place), then joined as if it had not.
    topics = [output.topic for output in batch.outputs]
    assert topics == ["incidents.events", "alerts.deadletter", "incidents.events"]
    joined = incident_pb2.IncidentEvent.FromString(batch.outputs[2].value)
    assert joined.type == incident_pb2.INCIDENT_EVENT_TYPE_ALERT_ADDED
    assert list(joined.incident.dedup_keys) == ["h1", "h3"]
    alerts = batch.views["alerts"]
    assert "db\x1fh2" not in alerts and alerts["db\x1fh3"]["count"] == 1
    (incident,) = [value for _, value, _ in batch.views["incidents"].staged()]
    assert incident["alert_keys"] == ["db\x1fh1", "db\x1fh3"]
    # every kept write goes to the changelog partition of the input that made it
    assert set(batch.partitions["alerts"]) == {"db\x1fh1", "db\x1fh3"}
    assert set(batch.partitions["alerts"].values()) == {3}
    assert processor.tables["alerts"] == {}  # nothing reaches the tables before _apply


class _Store(dict[str, Any]):
    """A table whose store is itself (the worker writes to ``table.data``)."""

    @property
    def data(self) -> dict[str, Any]:
        return self


class _HeldSender:
    """A batch sender whose sends are acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[str], asyncio.Future[None]]] = []

    async def submit(self, records: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.sent.append(([r.topic for r in records], future))
        return [future]

    wait = staticmethod(worker.BatchSender.wait)

    def acknowledge(self, index: int) -> None:
        self.sent[index][1].set_result(None)


async def test_a_batch_is_computed_over_the_one_before_but_sent_after_it_is_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tocsin.v1 import incident_pb2
    from tocsin_common.config import parse_config

    processor = _processor()
    processor.tables = {name: _Store() for name in TABLES}
    processor.config = SimpleNamespace(current=parse_config(GROUPED_CONFIG, "tocsin.yaml"))
    processor._next_offset = {}
    processor._rereading = {}
    processor._changelog_codecs = {
        name: (f"{name}-changelog", worker._json_dumps, worker._json_dumps) for name in TABLES
    }
    acked: list[int] = []
    processor.app = SimpleNamespace(consumer=SimpleNamespace(ack=lambda r: acked.append(r.offset)))
    sender = processor._batch_sender = _HeldSender()

    def record(event_id: str, offset: int) -> Any:
        record = _alert_input(event_id, "h1", offset)  # the same alert, twice
        record.tp = ("alerts.normalized", 3)
        return record

    from prometheus_client import REGISTRY

    def consumed() -> float:
        labels = {"service": "correlation", "topic": "alerts.normalized"}
        return REGISTRY.get_sample_value("tocsin_kafka_messages_consumed_total", labels) or 0.0

    before = consumed()
    first = await processor._step([record("e1", 0)], None)
    assert [topics for topics, _ in sender.sent] == [["incidents.events"]]
    assert consumed() == before + 1
    second_step = asyncio.ensure_future(processor._step([record("e2", 1)], first))
    await asyncio.sleep(0.01)

    # The second batch is computed (over the first's staged writes), but nothing of it is
    # sent, and nothing of either is kept or acked, before the first batch's events are
    # durable.
    assert len(sender.sent) == 1 and not second_step.done()
    assert processor.tables["alerts"] == {} and acked == []

    # The first batch's events are durable: its state is kept and goes to the changelogs,
    # handed over with the second batch's events (one produce request), before anything
    # is handed over for the first batch's changelogs alone.
    sender.acknowledge(0)
    second = await asyncio.wait_for(second_step, 1)
    changelogs = ["alerts-changelog", "incidents-changelog", "groups-changelog"]
    assert [topics for topics, _ in sender.sent][1:] == [changelogs, ["incidents.events"]]
    assert processor.tables["alerts"]["db\x1fh1"]["count"] == 1  # kept, going to changelog
    assert acked == []
    (output,) = second.batch.outputs
    repeated = incident_pb2.IncidentEvent.FromString(output.value)
    assert repeated.type == incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED  # a duplicate

    # The second batch's events are durable, but its state waits for the first batch's
    # changelogs: a compacted topic receives each key's values in order.
    sender.acknowledge(2)
    await asyncio.sleep(0.01)
    assert len(sender.sent) == 3 and acked == []
    assert processor.tables["alerts"]["db\x1fh1"]["count"] == 1
    sender.acknowledge(1)  # the first batch's changelogs: it is acked, the second kept
    await asyncio.wait_for(first.done, 1)
    await asyncio.sleep(0.01)
    assert acked == [0]
    assert [topics for topics, _ in sender.sent][3] == changelogs[:2]  # the group is as it was
    assert processor.tables["alerts"]["db\x1fh1"]["count"] == 2

    sender.acknowledge(3)
    await asyncio.wait_for(second.done, 1)
    assert acked == [0, 1]


async def test_a_batch_whose_events_failed_sends_nothing_further(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tocsin_common.config import parse_config

    processor = _processor()
    processor.tables = {name: _Store() for name in TABLES}
    processor.config = SimpleNamespace(current=parse_config(GROUPED_CONFIG, "tocsin.yaml"))
    processor._next_offset = {}
    processor._rereading = {}
    processor._changelog_codecs = {
        name: (f"{name}-changelog", worker._json_dumps, worker._json_dumps) for name in TABLES
    }
    acked: list[int] = []
    processor.app = SimpleNamespace(consumer=SimpleNamespace(ack=lambda r: acked.append(r.offset)))
    sender = processor._batch_sender = _HeldSender()

    def record(event_id: str, offset: int) -> Any:
        record = _alert_input(event_id, "h1", offset)
        record.tp = ("alerts.normalized", 3)
        return record

    first = await processor._step([record("e1", 0)], None)
    second_step = asyncio.ensure_future(processor._step([record("e2", 1)], first))
    await asyncio.sleep(0.01)
    sender.sent[0][1].set_exception(ValueError("not a broker failure"))  # not retried
    with pytest.raises(ValueError):
        await asyncio.wait_for(second_step, 1)
    with pytest.raises(ValueError):
        await asyncio.wait_for(first.done, 1)
    # nothing kept, nothing of the second batch sent, nothing acked
    assert len(sender.sent) == 1 and acked == [] and processor.tables["alerts"] == {}


async def test_a_batch_whose_changelogs_cannot_be_handed_over_sends_nothing_further() -> None:
    from tocsin_common.config import parse_config

    processor = _processor()
    processor.tables = {name: _Store() for name in TABLES}
    processor.config = SimpleNamespace(current=parse_config(GROUPED_CONFIG, "tocsin.yaml"))
    processor._next_offset = {}
    processor._rereading = {}
    processor._changelog_codecs = {
        name: (f"{name}-changelog", worker._json_dumps, worker._json_dumps) for name in TABLES
    }
    processor.app = SimpleNamespace(consumer=SimpleNamespace(ack=lambda r: None))

    class RefusingChangelogs(_HeldSender):
        async def submit(self, records: Any) -> Any:
            if any(r.topic.endswith("-changelog") for r in records):
                raise ValueError("not a broker failure")
            return await super().submit(records)

    sender = processor._batch_sender = RefusingChangelogs()

    def record(event_id: str, offset: int) -> Any:
        record = _alert_input(event_id, "h1", offset)
        record.tp = ("alerts.normalized", 3)
        return record

    first = await processor._step([record("e1", 0)], None)
    second_step = asyncio.ensure_future(processor._step([record("e2", 1)], first))
    await asyncio.sleep(0.01)
    sender.acknowledge(0)
    with pytest.raises(ValueError):
        await asyncio.wait_for(second_step, 1)
    assert len(sender.sent) == 1  # the second batch's events were not sent


# --- records handed over directly ------------------------------------------------------


class _FetchLoop:
    """What faust's Consumer._drain_messages reads, around one fetch of `records`: the
    loop stops after handing them over."""

    def __init__(self, records: list[Any], flow_active: bool) -> None:
        from collections import defaultdict

        self.handed_to_conductor: list[Any] = []
        self._records = records
        self._fetches = 0
        self._stopped = SimpleNamespace(is_set=lambda: self._fetches > 0)
        self.suspend_flow = asyncio.Event()
        self.app = SimpleNamespace(
            flow_control=SimpleNamespace(is_active=lambda: flow_active),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        )
        self._read_offset: dict[Any, Any] = defaultdict(lambda: None)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.log = SimpleNamespace(dev=lambda *a, **k: None, exception=lambda *a, **k: None)

    async def callback(self, message: Any) -> None:
        self.handed_to_conductor.append(message)

    async def wait_first(self, *coroutines: Any) -> None:
        for coroutine in coroutines:
            coroutine.close()  # the flow is stopped: nothing handed over

    def getmany(self, timeout: float) -> Any:
        self._fetches += 1
        records = self._records

        async def fetched() -> Any:
            for record in records:
                yield record.tp, record

        return fetched()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _fetched(topic: str, offset: int) -> Any:
    return SimpleNamespace(topic=topic, tp=(topic, 0), offset=offset, key=b"k", value=b"v")


@pytest.mark.parametrize("flow_active", [True, False])
async def test_records_of_a_direct_channel_go_to_its_queue_as_fetched(flow_active: bool) -> None:
    from mode.utils.queues import FlowControlEvent, ThrowableQueue
    from tocsin_common import faustapp

    queue: Any = ThrowableQueue(maxsize=10, flow_control=FlowControlEvent())
    records = [_fetched("alerts.normalized", 0), _fetched("other", 0)]
    records.append(_fetched("alerts.normalized", 1))
    loop = _FetchLoop(records, flow_active)
    faustapp.deliver_directly(loop.app, SimpleNamespace(topics=("alerts.normalized",), queue=queue))

    await faustapp._drain_messages(loop, SimpleNamespace(_stopped=loop._stopped))

    taken = [queue.get_nowait() for _ in range(queue.qsize())]
    if flow_active:
        # the records themselves, in order; other topics still go through the conductor
        assert taken == [records[0], records[2]]
        assert loop.handed_to_conductor == [records[1]]
    else:
        # rebalancing: nothing handed over, so nothing acked (read again after the seek)
        assert taken == [] and loop.handed_to_conductor == []


async def test_an_input_whose_event_would_be_too_big_to_send_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tocsin.v1 import alert_pb2
    from tocsin_common.config import parse_config

    monkeypatch.setattr(worker, "MAX_EVENT_BYTES", 4000)
    config = parse_config(GROUPED_CONFIG, "tocsin.yaml")
    processor = _processor()
    batch = worker.Batch(processor.tables)
    small = _alert_input("e1", "h1", 0)
    huge = _alert_input("e2", "h2", 1)
    alert = alert_pb2.Alert.FromString(huge.value)
    alert.labels["alertname"] = "x" * 3000  # copied into the incident: twice in the event
    huge.value = alert.SerializeToString()

    await processor._process_input(batch, small, config)
    await processor._process_input(batch, huge, config)

    assert [output.topic for output in batch.outputs] == ["incidents.events", "alerts.deadletter"]
    letter = alert_pb2.DeadLetter.FromString(batch.outputs[1].value)
    assert letter.original_value == huge.value and letter.source_offset == 1
    assert "more than the 4000 a record may have" in letter.reason
    assert "db\x1fh2" not in batch.views["alerts"]  # its writes undone
