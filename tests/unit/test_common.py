"""Unit tests of libs/common: settings, topics, tracing, JSON logs, the fake clock, validation."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import descriptor_pool
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2  # noqa: F401 (registers types)
from tocsin_common import runtime, topics, tracing
from tocsin_common.clock import FakeClock
from tocsin_common.logs import JsonFormatter
from tocsin_common.settings import DEFAULT_PORTS, Settings, SettingsError
from tocsin_common.tracing import (
    consume_span,
    context_from_kafka_headers,
    current_trace_id,
    kafka_headers,
)
from tocsin_common.validation import FieldError, InvalidInput

# --- settings ---------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env("alert-ingest", {})
    assert settings.service == "alert-ingest"
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.config_path == "config/tocsin.example.yaml"
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50051)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.metrics_port == 9101
    assert settings.escalation_grpc == "127.0.0.1:50053"
    assert settings.public_url == "http://127.0.0.1:8081"
    assert settings.data_dir == "/tmp/tocsin-alert-ingest"
    assert settings.log_level == "INFO"
    assert settings.config_reload_seconds == 5.0


def test_default_ports_are_distinct_per_service() -> None:
    ports: list[int] = []
    for service, expected in DEFAULT_PORTS.items():
        settings = Settings.from_env(service, {})
        assert settings.grpc_port == expected.grpc
        assert settings.metrics_port == expected.metrics
        assert settings.http_port == expected.http
        ports += [p for p in (expected.grpc, expected.metrics, expected.http) if p is not None]
    assert len(ports) == len(set(ports))


def test_service_without_http_ignores_http_port() -> None:
    settings = Settings.from_env("correlation", {"TOCSIN_HTTP_PORT": "9000"})
    assert settings.http_port is None
    assert settings.grpc_port == 50052


def test_settings_from_environment_values() -> None:
    env = {
        "TOCSIN_KAFKA_BOOTSTRAP": "kafka:9092",
        "TOCSIN_REDIS_URL": "redis://redis:6379/1",
        "TOCSIN_CONFIG": "/etc/tocsin.yaml",
        "TOCSIN_GRPC_HOST": "0.0.0.0",
        "TOCSIN_GRPC_PORT": "6000",
        "TOCSIN_HTTP_PORT": "6001",
        "TOCSIN_METRICS_PORT": "",  # empty means the default
        "TOCSIN_LOG_LEVEL": "debug",
        "TOCSIN_CONFIG_RELOAD_SECONDS": "0.5",
    }
    settings = Settings.from_env("notification", env)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url == "redis://redis:6379/1"
    assert settings.config_path == "/etc/tocsin.yaml"
    assert settings.grpc_host == "0.0.0.0"
    assert (settings.grpc_port, settings.http_port) == (6000, 6001)
    assert settings.metrics_port == 9104
    assert settings.log_level == "DEBUG"
    assert settings.config_reload_seconds == 0.5


def test_settings_read_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOCSIN_GRPC_PORT", "7001")
    assert Settings.from_env("escalation").grpc_port == 7001


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TOCSIN_GRPC_PORT", "abc", "whole number"),
        ("TOCSIN_HTTP_PORT", "80.5", "whole number"),
        ("TOCSIN_METRICS_PORT", "0", "between 1 and 65535"),
        ("TOCSIN_GRPC_PORT", "65536", "between 1 and 65535"),
        ("TOCSIN_HTTP_PORT", "-1", "between 1 and 65535"),
        ("TOCSIN_CONFIG_RELOAD_SECONDS", "soon", "seconds"),
    ],
)
def test_settings_errors_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env("alert-ingest", {name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}")
    assert fragment in message
    assert isinstance(caught.value, ValueError)


def test_settings_boundary_ports_accepted() -> None:
    settings = Settings.from_env(
        "alert-ingest", {"TOCSIN_GRPC_PORT": "1", "TOCSIN_HTTP_PORT": "65535"}
    )
    assert (settings.grpc_port, settings.http_port) == (1, 65535)


def test_unknown_service() -> None:
    with pytest.raises(SettingsError, match="unknown service 'ingest'"):
        Settings.from_env("ingest", {})


# --- topics -----------------------------------------------------------------------------------


def test_topic_names_unique_and_found_by_name() -> None:
    names = [t.name for t in topics.ALL_TOPICS]
    assert len(names) == len(set(names))
    for topic in topics.ALL_TOPICS:
        assert topics.by_name(topic.name) is topic
        assert topic.partitions is None or topic.partitions >= 1
        assert topic.partition_count(7) == (topic.partitions or 7)
        assert topic.retention_ms > 0
    with pytest.raises(KeyError, match="unknown topic 'alerts'"):
        topics.by_name("alerts")


def test_spec_topics_exist() -> None:
    for name in (
        "alerts.raw",
        "alerts.normalized",
        "alerts.deadletter",
        "changes",
        "incidents.commands",
        "incidents.events",
        "notifications.requests",
        "notifications.status",
    ):
        assert topics.by_name(name).name == name


def test_correlation_inputs_are_co_partitioned() -> None:
    # One correlation worker must own a service's alerts, commands and changes together:
    # same key and the same partition count as the tables (the setting, whatever it is).
    inputs = (topics.ALERTS_NORMALIZED, topics.INCIDENTS_COMMANDS, topics.CHANGES)
    assert set(topics.CO_PARTITIONED) == set(inputs)
    assert set(topics.CORRELATION_GROUP.topics) == {t.name for t in inputs}
    for configured in (1, 12, 48, 1000):
        assert {t.partition_count(configured) for t in inputs} == {configured}
    assert {t.key for t in inputs} == {"service id"}


def test_pipeline_topics_follow_the_setting_small_ones_stay_fixed() -> None:
    scaled = {t.name for t in topics.ALL_TOPICS if t.partitions is None}
    assert scaled == {
        "alerts.raw",
        "alerts.normalized",
        "changes",
        "incidents.commands",
        "incidents.events",
        "incidents.timeline",
        "notifications.requests",
        "notifications.status",
    }
    assert topics.AUDIT.partition_count(48) == 3
    assert topics.DEFAULT_PARTITIONS == 48


def test_partition_problems_name_the_topic_and_the_counts() -> None:
    every = {t.name: t.partition_count(48) for t in topics.ALL_TOPICS}
    assert topics.partition_problems(every, 48) == []
    # Created with 12, the setting now 48: every pipeline topic is reported, not the fixed.
    old = {t.name: t.partition_count(12) for t in topics.ALL_TOPICS}
    problems = topics.partition_problems(old, 48)
    assert len(problems) == 8
    assert "topic alerts.normalized has 12 partitions, TOCSIN_KAFKA_PARTITIONS=48 expects 48" in (
        problems
    )
    # Topics the broker lacks are not a problem (they are about to be created).
    assert topics.partition_problems({}, 48) == []
    # Co-partitioned topics with unequal counts: correlation cannot run.
    uneven = {**every, "incidents.commands": 12}
    assert topics.partition_problems(uneven, 48, topics.CO_PARTITIONED) == [
        "topic incidents.commands has 12 partitions, TOCSIN_KAFKA_PARTITIONS=48 expects 48",
        "co-partitioned topics have unequal partition counts: "
        "alerts.normalized 48, incidents.commands 12, changes 48",
    ]
    # Fixed topics are checked against their own count.
    assert topics.partition_problems({"audit": 5}, 48) == [
        "topic audit has 5 partitions, TOCSIN_KAFKA_PARTITIONS=48 expects 3"
    ]


def test_kafka_partitions_setting() -> None:
    assert Settings.from_env("correlation", {}).kafka_partitions == topics.DEFAULT_PARTITIONS
    settings = Settings.from_env("correlation", {"TOCSIN_KAFKA_PARTITIONS": "12"})
    assert settings.kafka_partitions == 12
    for bad, problem in (
        ("0", "expected a whole number from 1 to 1000"),
        ("1001", "expected a whole number from 1 to 1000"),
        ("many", "expected a whole number"),
    ):
        with pytest.raises(SettingsError, match=f"TOCSIN_KAFKA_PARTITIONS='{bad}': {problem}"):
            Settings.from_env("escalation", {"TOCSIN_KAFKA_PARTITIONS": bad})


def test_topic_messages_are_protobuf_types() -> None:
    pool = descriptor_pool.Default()
    for topic in topics.ALL_TOPICS:
        if topic.message.startswith("tocsin.v1."):
            assert pool.FindMessageTypeByName(topic.message).full_name == topic.message


# --- tracing ----------------------------------------------------------------------------------
# Spans come from a provider of our own (no global provider is installed, so other test
# modules may install theirs); the global propagator only needs the current span.


@pytest.fixture(scope="module")
def otel() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tocsin.tests"), exporter
    provider.shutdown()


@pytest.fixture
def tracer(otel: tuple[trace.Tracer, InMemorySpanExporter]) -> trace.Tracer:
    otel[1].clear()
    return otel[0]


@pytest.fixture
def exporter(otel: tuple[trace.Tracer, InMemorySpanExporter]) -> InMemorySpanExporter:
    return otel[1]


def hex_ids(span: trace.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def test_kafka_headers_carry_the_current_trace(tracer: trace.Tracer) -> None:
    span = tracer.start_span("produce")
    with trace.use_span(span, end_on_exit=True):
        headers = kafka_headers([("tocsin-format", b"events_v2")])
        assert current_trace_id() == hex_ids(span)[0]
    assert headers[0] == ("tocsin-format", b"events_v2")
    values = dict(headers)
    assert isinstance(values["traceparent"], bytes)
    version, trace_id, span_id, _flags = values["traceparent"].decode().split("-")
    assert (trace_id, span_id) == hex_ids(span)
    assert version == "00"


@pytest.mark.parametrize("form", ["list", "dict"])
def test_context_from_kafka_headers(tracer: trace.Tracer, form: str) -> None:
    span = tracer.start_span("produce")
    with trace.use_span(span, end_on_exit=True):
        headers = kafka_headers()
    carrier = dict(headers) if form == "dict" else headers
    remote = trace.get_current_span(context_from_kafka_headers(carrier)).get_span_context()
    assert remote.is_valid and remote.is_remote
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id


def test_context_from_headers_without_trace(tracer: trace.Tracer) -> None:
    assert kafka_headers() == []  # no current span: nothing to propagate
    for headers in (None, [], {}, [("tocsin-format", b"events_v2")]):
        ctx = context_from_kafka_headers(headers)
        assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert current_trace_id() is None


def test_consume_span_continues_the_producer_trace(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    producer = tracer.start_span("alerts.normalized publish")
    with trace.use_span(producer, end_on_exit=True):
        headers = kafka_headers()
    with consume_span(tracer, "alerts.normalized", headers, service_id="checkout"):
        pass
    consumer = next(s for s in exporter.get_finished_spans() if s.name.endswith("process"))
    assert consumer.name == "alerts.normalized process"
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.get_span_context().trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id
    assert consumer.attributes["messaging.destination.name"] == "alerts.normalized"
    assert consumer.attributes["service_id"] == "checkout"


# --- logs -------------------------------------------------------------------------------------


def make_record(exc_info: object = None) -> logging.LogRecord:
    return logging.getLogger("tocsin.tests").makeRecord(
        "tocsin.tests",
        logging.WARNING,
        __file__,
        1,
        "paged %s",
        ("alice",),
        exc_info,  # type: ignore[arg-type]
        extra={"incident_id": "inc-1", "attempt": 2, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )


def test_json_formatter_fields_and_extra() -> None:
    entry = json.loads(JsonFormatter("escalation").format(make_record()))
    assert entry["msg"] == "paged alice"
    assert entry["level"] == "warning"
    assert entry["service"] == "escalation"
    assert entry["logger"] == "tocsin.tests"
    assert entry["incident_id"] == "inc-1" and entry["attempt"] == 2
    assert entry["when"] == "2026-01-01 00:00:00+00:00"
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None
    assert "trace_id" not in entry and "span_id" not in entry
    assert "args" not in entry and "levelno" not in entry  # standard attributes stay out


def test_json_formatter_adds_trace_id_inside_a_span(tracer: trace.Tracer) -> None:
    span = tracer.start_span("work")
    with trace.use_span(span, end_on_exit=True):
        entry = json.loads(JsonFormatter("escalation").format(make_record()))
    assert (entry["trace_id"], entry["span_id"]) == hex_ids(span)


def test_json_formatter_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = make_record(sys.exc_info())
    entry = json.loads(JsonFormatter("notification").format(record))
    assert "ValueError: boom" in entry["exc"]


# --- clock ------------------------------------------------------------------------------------


async def test_fake_clock_sleepers_wake_on_advance_and_not_before() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    clock = FakeClock(start)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper("short", 5)), asyncio.create_task(sleeper("long", 10))]
    for _ in range(3):
        await asyncio.sleep(0)
    assert woke == [] and clock.now() == start  # time does not pass by itself

    clock.advance(4.999)
    for _ in range(3):
        await asyncio.sleep(0)
    assert woke == []

    clock.advance(timedelta(milliseconds=1))
    for _ in range(3):
        await asyncio.sleep(0)
    assert woke == [("short", start + timedelta(seconds=5))]

    clock.advance(60)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=1)
    assert [name for name, _ in woke] == ["short", "long"]
    assert clock.now() == start + timedelta(seconds=65)


async def test_fake_clock_zero_sleep_returns_at_once() -> None:
    clock = FakeClock()
    await asyncio.wait_for(clock.sleep(0), timeout=1)
    await asyncio.wait_for(clock.sleep(-1), timeout=1)
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


# --- validation -------------------------------------------------------------------------------


def test_invalid_input_lists_every_error() -> None:
    errors = [FieldError("payload.severity", "must be one of critical"), FieldError("a", "x")]
    exc = InvalidInput(errors)
    assert str(exc) == "payload.severity: must be one of critical; a: x"
    assert exc.errors == errors
    assert isinstance(exc, ValueError)
    assert errors[0].as_dict() == {
        "field": "payload.severity",
        "problem": "must be one of critical",
    }


@pytest.mark.parametrize(
    ("env", "exported"),
    [
        ({}, True),  # the SDK's default exporter is otlp
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": ""}, False),
        ({"OTEL_TRACES_EXPORTER": "none, Console"}, True),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),  # not one tocsin installs
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_spans_are_built_only_when_an_exporter_would_send_them(
    env: dict[str, str], exported: bool
) -> None:
    # Every service installs the no-op tracer provider when this is False.
    assert tracing.spans_exported(env) is exported


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "uvloop"), ({"TOCSIN_EVENT_LOOP": "asyncio"}, "asyncio")],
)
def test_the_event_loop_is_uvloop_unless_asked_otherwise(
    env: dict[str, str], expected: str
) -> None:
    loop = runtime.event_loop_factory(env)()
    try:
        assert type(loop).__module__.split(".")[0] == expected
    finally:
        loop.close()


def test_an_unknown_event_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="TOCSIN_EVENT_LOOP"):
        runtime.event_loop_factory({"TOCSIN_EVENT_LOOP": "trio"})


# Kafka's own murmur2 vectors (the Java client's UtilsTest): the partition a key goes to
# must be the one every other Kafka client computes, or co-partitioned topics split.
MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_key_partitioner_places_keys_as_the_java_client_does(partitions: int) -> None:
    from tocsin_common.kafka import KeyPartitioner

    partitioner = KeyPartitioner()
    every = list(range(partitions))
    for key, signed_hash in MURMUR2_VECTORS.items():
        expected = (signed_hash & 0x7FFFFFFF) % partitions
        assert partitioner(key, every, every) == expected
        assert partitioner(key, every, every) == expected  # and again, from its table
        assert partitioner.partition(key, partitions) == expected


def test_murmur2_equals_aiokafkas_on_keys_of_every_length() -> None:
    import random

    from aiokafka.partitioner import murmur2 as aiokafka_murmur2
    from tocsin_common.kafka import murmur2

    rng = random.Random(7)
    for length in list(range(0, 70)) * 20 + [36] * 500:  # 36: a uuid, the incident ids
        key = bytes(rng.randrange(256) for _ in range(length))
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_key_partitioner_follows_a_change_in_partition_count_and_bounds_its_table() -> None:
    from tocsin_common.kafka import KeyPartitioner

    partitioner = KeyPartitioner(max_keys=4)
    key = b"a-little-bit-longer-string"
    signed_hash = MURMUR2_VECTORS[key]
    assert partitioner(key, list(range(12)), []) == (signed_hash & 0x7FFFFFFF) % 12
    assert partitioner(key, list(range(5)), []) == (signed_hash & 0x7FFFFFFF) % 5
    for n in range(10):
        partitioner(f"key-{n}".encode(), list(range(12)), [])
    assert len(partitioner._known) <= 4
    assert partitioner(None, [0, 1, 2], [1]) == 1  # no key: an available partition


async def test_ensure_pipeline_topics_warns_or_refuses_on_other_counts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tocsin_common import kafka

    created_with: list[int] = []
    broker = {t.name: t.partition_count(12) for t in topics.ALL_TOPICS}

    async def fake_ensure_topics(
        bootstrap: str, wanted: object, security: object, partitions: int
    ) -> dict[str, int]:
        created_with.append(partitions)
        return broker

    monkeypatch.setattr(kafka, "ensure_topics", fake_ensure_topics)
    settings = Settings.from_env("escalation", {"TOCSIN_KAFKA_PARTITIONS": "48"})
    # escalation: the broker's topics (12) stay as they are; warned, not refused.
    with caplog.at_level(logging.WARNING, logger="tocsin.kafka"):
        assert await kafka.ensure_pipeline_topics(settings) == broker
    assert created_with == [48]
    assert "topic incidents.events has 12 partitions, TOCSIN_KAFKA_PARTITIONS=48" in caplog.text
    # correlation: its co-partitioned inputs must match its tables.
    with pytest.raises(kafka.PartitionMismatch, match=r"alerts\.normalized has 12 partitions"):
        await kafka.ensure_pipeline_topics(settings, strict=topics.CO_PARTITIONED)
    same = Settings.from_env("correlation", {"TOCSIN_KAFKA_PARTITIONS": "12"})
    assert await kafka.ensure_pipeline_topics(same, strict=topics.CO_PARTITIONED) == broker


async def test_producers_send_a_lone_record_without_lingering() -> None:
    from tocsin_common.kafka import EventProducer
    from tocsin_ingest.publisher import IngestProducer

    for producer in (
        EventProducer("127.0.0.1:1", "test"),
        IngestProducer("127.0.0.1:1", "test", traced=False),
    ):
        client = producer._producer
        assert client._message_accumulator._linger_time == 0
        await producer.stop()
