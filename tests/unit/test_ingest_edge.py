"""One rule at the edge, over the three ways in: an accepted event is one the pipeline can
process. Each row of CASES is one bad input and how each path refuses it: HTTP with a 400
naming the field, gRPC with INVALID_ARGUMENT naming it (never UNKNOWN), alerts.raw with a
rejection (a dead letter) naming it. What is accepted parses in the correlation decoder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiokafka import ConsumerRecord, TopicPartition
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2, ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common.config import ConfigStore
from tocsin_common.grpc_errors import FIELD_ERRORS_TRAILER, ErrorMappingInterceptor
from tocsin_common.validation import MAX_STRUCT_DEPTH, FieldError, InvalidInput
from tocsin_ingest import formats, grpc_api, raw_consumer
from tocsin_ingest.grpc_api import IngestServicer
from tocsin_ingest.http_api import IngestHttpApi, runner_options
from tocsin_ingest.raw_consumer import RawConsumer, RecordRejected, decode_record

JSON = {"Content-Type": "application/json"}
KEY = "edgekey000000000000000000000001"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = f"""
version: 1
services:
  - id: s
    name: S
    escalation_policy: p
    integrations: [{{key: {KEY}}}]
escalation_policies:
  - {{id: p, name: P, levels: [{{delay: 5m, targets: [{{type: user, id: u}}]}}]}}
users: [{{id: u, name: U, email: u@example.com}}]
"""


def nested(levels: int) -> Any:
    """``levels`` levels of objects, the outermost included."""
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


def v2(details: str = "{}", *, summary: str = '"disk full"', dedup: str = '"k1"',
       client: str = '"monitor"', timestamp: str = '"2026-01-01T00:00:00Z"') -> bytes:  # fmt: skip
    """An Events v2 trigger as JSON text, each part given as raw JSON (any literal)."""
    return (
        f'{{"routing_key": "{KEY}", "event_action": "trigger", "dedup_key": {dedup}, '
        f'"client": {client}, "payload": {{"summary": {summary}, "source": "db-1", '
        f'"severity": "critical", "timestamp": {timestamp}, "custom_details": {details}}}}}'
    ).encode()


def webhook(entry: str) -> bytes:
    """An Alertmanager/Grafana notification with one alert, ``entry`` its raw extra keys."""
    return (
        f'{{"version": "4", "routing_key": "{KEY}", "alerts": [{{"status": "firing", '
        f'"fingerprint": "f1", {entry}}}]}}'
    ).encode()


def request(**kw: Any) -> ingest_service_pb2.SendEventRequest:
    fields: dict[str, Any] = {
        "routing_key": KEY,
        "action": alert_pb2.ALERT_ACTION_TRIGGER,
        "dedup_key": "k1",
        "summary": "disk full",
        "source": "db-1",
        "severity": alert_pb2.SEVERITY_CRITICAL,
    }
    return ingest_service_pb2.SendEventRequest(**(fields | kw))


def details(value: Any) -> Struct:
    struct = Struct()
    struct.update(value)
    return struct


def number(n: float) -> Struct:
    struct = Struct()
    struct.fields["n"].number_value = n
    return struct


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str  # the JSON paths' format (HTTP route, alerts.raw header)
    body: bytes
    field: str  # as HTTP and alerts.raw name it
    problem: str
    grpc: ingest_service_pb2.SendEventRequest | None = None  # None: gRPC cannot carry it
    grpc_field: str = ""
    grpc_problem: str = ""


BIG_LIST = "[" + ",".join(["0"] * 150_000) + "]"  # 300 KB of JSON, ~1.8 MB as a Struct
CASES = [
    Case("details 33 deep", "events_v2", v2(json.dumps(nested(MAX_STRUCT_DEPTH + 1))),
         "payload.custom_details", "nested 33 levels deep; at most 32",
         request(custom_details=details(nested(MAX_STRUCT_DEPTH + 1))), "custom_details",
         "nested 33 levels deep; at most 32"),
    Case("details 800 deep", "events_v2", v2("[" * 800 + "]" * 800),
         "payload.custom_details", "nested 801 levels deep"),
    Case("lone surrogate in summary", "events_v2", v2(summary='"\\ud800"'),
         "payload.summary", "lone surrogate"),
    Case("lone surrogate in dedup_key", "events_v2", v2(dedup='"a\\udfffb"'),
         "dedup_key", "lone surrogate"),
    Case("lone surrogate in a details name", "events_v2", v2('{"x\\ud800": 1}'),
         "payload.custom_details.x\\ud800", "name is not valid Unicode"),
    Case("lone surrogate in a label name", "alertmanager",
         webhook('"labels": {"\\ud800": "v"}'), "alerts[0].labels.\\ud800",
         "name is not valid Unicode"),
    Case("not UTF-8", "events_v2", v2(summary='"caf\xe9"').replace(b"\xc3\xa9", b"\xe9"),
         "(body)", "is not UTF-8"),
    Case("integer of 5,000 digits", "events_v2", v2('{"n": ' + "9" * 5000 + "}"),
         "payload.custom_details.n", "outside the 64-bit range"),
    Case("integer over 64 bits", "events_v2", v2('{"n": 18446744073709551616}'),
         "payload.custom_details.n", "outside the 64-bit range"),
    Case("1e400", "events_v2", v2('{"n": 1e400}'), "payload.custom_details.n",
         "not finite", request(custom_details=number(math.inf)), "custom_details.n",
         "not finite"),
    Case("NaN", "events_v2", v2('{"n": NaN}'), "payload.custom_details.n",
         "NaN, which JSON does not allow", request(custom_details=number(math.nan)),
         "custom_details.n", "not finite"),
    Case("-Infinity", "events_v2", v2('{"n": [-Infinity]}'), "payload.custom_details.n[0]",
         "-Infinity, which JSON does not allow"),
    Case("Grafana value 10^400", "grafana",
         webhook('"labels": {}, "values": {"B": 1' + "0" * 400 + "}"),
         "alerts[0].values.B", "outside the 64-bit range"),
    Case("client of 200 KB", "events_v2", v2(client=json.dumps("c" * 200_000)), "client",
         "is 200000 characters; at most 8192", request(client="c" * 200_000), "client",
         "is 200000 characters; at most 8192"),
    Case("300 labels", "alertmanager",
         webhook('"labels": ' + json.dumps({f"l{i}": "v" for i in range(300)})),
         "alerts[0].labels", "has 300 entries; at most 256",
         request(labels={f"l{i}": "v" for i in range(300)}), "labels",
         "has 300 entries; at most 256"),
    Case("a label of 100 KB", "alertmanager", webhook('"labels": {"big": "' + "v" * 100_000 + '"}'),
         "alerts[0].labels.big", "at most 8192", request(labels={"big": "v" * 100_000}),
         "labels.big", "at most 8192"),
    Case("alert over a Kafka record", "events_v2", v2(BIG_LIST), "(event)",
         "bytes once normalized", request(custom_details=details({"l": [0] * 150_000})),
         "(request)", "at most 524,288 allowed"),
    Case("timestamp out of range", "events_v2", v2(timestamp='"99999-01-01T00:00:00Z"'),
         "payload.timestamp", "RFC 3339", request(timestamp=Timestamp(seconds=2**40)),
         "timestamp", "between 0001-01-01"),
]  # fmt: skip
IDS = [case.name for case in CASES]


class Published:
    """The publisher: what would go to alerts.normalized and changes."""

    def __init__(self) -> None:
        self.alerts: list[alert_pb2.Alert] = []
        self.changes: list[alert_pb2.ChangeEvent] = []

    async def publish_all(self, alerts: list[alert_pb2.Alert]) -> None:
        self.alerts.extend(alerts)

    async def hand_over(self, alerts: list[alert_pb2.Alert]) -> None:
        self.alerts.extend(alerts)

    async def publish_change(self, change: alert_pb2.ChangeEvent) -> None:
        self.changes.append(change)


@pytest.fixture
def config(tmp_path: Path) -> ConfigStore:
    path = tmp_path / "tocsin.yaml"
    path.write_text(CONFIG)
    return ConfigStore(path)


class Served:
    """The HTTP API served as the service serves it (web.AppRunner with runner_options)."""

    def __init__(self, runner: web.AppRunner, port: int, session: aiohttp.ClientSession) -> None:
        self.runner, self.host, self.port, self.session = runner, "127.0.0.1", port, session

    async def post(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        response = await self.session.post(f"http://{self.host}:{self.port}{path}", **kw)
        await response.read()
        return response


@pytest.fixture
async def http(config: ConfigStore) -> AsyncIterator[tuple[Served, Published]]:
    published = Published()
    api = IngestHttpApi(config, published, read_timeout=0.5)  # type: ignore[arg-type]
    runner = web.AppRunner(api.app(traced=False), access_log=None, **runner_options(0.5))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield Served(runner, port, session), published
    await runner.cleanup()


@pytest.fixture
async def stub(
    config: ConfigStore,
) -> AsyncIterator[tuple[ingest_service_pb2_grpc.IngestServiceStub, Published]]:
    published = Published()
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(config, published),  # type: ignore[arg-type]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    )
    client = ingest_service_pb2_grpc.IngestServiceStub(channel)
    client.channel = channel  # type: ignore[attr-defined]  # for calls with raw bytes
    yield client, published
    await channel.close()
    await server.stop(None)


def route(fmt: str) -> str:
    return "/v2/enqueue" if fmt == "events_v2" else f"/v1/webhooks/{fmt}/{KEY}"


def names(errors: list[dict[str, str]], field: str, problem: str) -> bool:
    return any(e["field"] == field and problem in e["problem"] for e in errors)


# --- the table, over each path ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_http_answers_400_naming_the_field(
    case: Case, http: tuple[Served, Published]
) -> None:
    client, published = http
    response = await client.post(route(case.fmt), data=case.body, headers=JSON)
    answer = await response.json()
    assert response.status == 400, answer
    assert names(answer["fields"], case.field, case.problem), answer["fields"]
    assert not published.alerts


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_alerts_raw_rejects_the_record_naming_the_field(case: Case, config: ConfigStore) -> None:
    headers = [("tocsin-format", case.fmt.encode()), ("tocsin-routing-key", KEY.encode())]
    with pytest.raises(RecordRejected) as rejected:
        decode_record(headers, case.body, config.current, NOW)
    errors = [e.as_dict() for e in rejected.value.errors]
    assert names(errors, case.field, case.problem), errors
    str(rejected.value).encode("utf-8")  # a dead letter can carry the reason


GRPC_CASES = [case for case in CASES if case.grpc is not None]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[case.name for case in GRPC_CASES])
async def test_grpc_answers_invalid_argument_naming_the_field(
    case: Case, stub: tuple[ingest_service_pb2_grpc.IngestServiceStub, Published]
) -> None:
    client, published = stub
    assert case.grpc is not None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.SendEvent(case.grpc)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    trailer = dict(caught.value.trailing_metadata() or ())[FIELD_ERRORS_TRAILER]
    assert names(json.loads(trailer), case.grpc_field, case.grpc_problem), trailer

    async def one() -> AsyncIterator[ingest_service_pb2.SendEventRequest]:
        yield request(dedup_key="fine")
        yield case.grpc  # type: ignore[misc]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.SendEvents(one())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"events[1].{case.grpc_field}: " in (caught.value.details() or "")
    assert not published.alerts


# --- what is accepted, the correlation decoder parses ---------------------------------------


def processable(alert: alert_pb2.Alert) -> None:
    """As correlation reads it, and as its incident record carries it."""
    assert alert_pb2.Alert.FromString(alert.SerializeToString()) == alert
    event = incident_pb2.IncidentEvent(alert=alert)
    event.incident.labels.update(alert.labels)
    assert incident_pb2.IncidentEvent.FromString(event.SerializeToString()) == event


def processable_change(change: alert_pb2.ChangeEvent) -> None:
    assert alert_pb2.ChangeEvent.FromString(change.SerializeToString()) == change
    event = incident_pb2.IncidentEvent()
    event.incident.probable_causes.add(change=change)
    assert incident_pb2.IncidentEvent.FromString(event.SerializeToString()) == event


async def test_the_deepest_details_accepted_on_every_path_are_processable(
    http: tuple[Served, Published],
    stub: tuple[ingest_service_pb2_grpc.IngestServiceStub, Published],
    config: ConfigStore,
) -> None:
    deepest = nested(MAX_STRUCT_DEPTH)
    client, published = http
    response = await client.post("/v2/enqueue", data=v2(json.dumps(deepest)), headers=JSON)
    assert response.status == 202
    headers = [("tocsin-format", b"events_v2")]
    published.alerts += decode_record(headers, v2(json.dumps(deepest)), config.current, NOW)
    grpc_client, grpc_published = stub
    await grpc_client.SendEvent(request(custom_details=details(deepest)))
    alerts = published.alerts + grpc_published.alerts
    assert len(alerts) == 3
    for alert in alerts:
        processable(alert)

    change = json.dumps(
        {"routing_key": KEY, "payload": {"summary": "deploy", "custom_details": deepest}}
    )
    response = await client.post("/v2/change/enqueue", data=change.encode(), headers=JSON)
    assert response.status == 202
    processable_change(published.changes[0])
    too_deep = change.replace('"bottom"', '{"a": "bottom"}')
    response = await client.post("/v2/change/enqueue", data=too_deep.encode(), headers=JSON)
    assert response.status == 400
    assert (await response.json())["fields"][0]["field"] == "payload.custom_details"


def test_the_limit_is_below_what_protobuf_parses() -> None:
    """The measure behind MAX_STRUCT_DEPTH: one level more fails in an IncidentEvent."""
    change = alert_pb2.ChangeEvent(details=details(nested(MAX_STRUCT_DEPTH + 1)))
    event = incident_pb2.IncidentEvent()
    event.incident.probable_causes.add(change=change)
    with pytest.raises(Exception, match=r"(?i)pars|decod|recurs|depth"):
        incident_pb2.IncidentEvent.FromString(event.SerializeToString())


# --- HTTP: content type, slow and vanishing clients -------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_that_is_not_json_by_content_type_gets_415(
    content_type: str, http: tuple[Served, Published]
) -> None:
    client, published = http
    response = await client.post("/v2/enqueue", data=v2(), headers={"Content-Type": content_type})
    assert response.status == 415
    answer = await response.json()
    assert answer["fields"][0]["field"] == "Content-Type"
    assert content_type in answer["fields"][0]["problem"]
    assert not published.alerts


@pytest.mark.parametrize(
    "headers", [{"Content-Type": "application/json; charset=utf-8"},
                {"Content-Type": "application/vnd.pagerduty+json"}, {}]
)  # fmt: skip
async def test_json_content_types_and_none_are_read_as_json(
    headers: dict[str, str], http: tuple[Served, Published]
) -> None:
    client, _ = http
    response = await client.post(
        "/v2/enqueue", data=v2(), headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert response.status == 202, await response.text()


async def raw_http(client: Served, data: bytes) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_headers_that_never_end_are_closed_within_the_read_timeout(
    http: tuple[Served, Published],
) -> None:
    client, _ = http
    reader, writer = await raw_http(client, b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\n")
    started = asyncio.get_running_loop().time()
    for _ in range(3):  # a header now and then, never the end of them
        await asyncio.sleep(0.2)
        writer.write(b"X-Slow: 1\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    assert asyncio.get_running_loop().time() - started < 2
    writer.close()


async def test_a_body_that_never_arrives_gets_408_and_the_connection_closed(
    http: tuple[Served, Published],
) -> None:
    client, published = http
    reader, writer = await raw_http(
        client,
        b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n" + v2()[:100],
    )
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not all arrive within 0.5 s" in answer
    assert not published.alerts
    writer.close()


async def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(
    http: tuple[Served, Published], caplog: pytest.LogCaptureFixture
) -> None:
    client, published = http
    caplog.set_level(logging.DEBUG)
    _, writer = await raw_http(
        client,
        b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n" + v2()[:100],
    )
    writer.close()
    await asyncio.sleep(0.3)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert any(r.getMessage() == "request body cut short" for r in caplog.records)
    assert not published.alerts
    response = await client.post("/v2/enqueue", data=v2(), headers=JSON)  # still serving
    assert response.status == 202


# --- gRPC: streams bounded as they arrive; nothing escapes as UNKNOWN ------------------------


async def test_a_stream_of_bad_events_is_refused_before_its_end(
    stub: tuple[ingest_service_pb2_grpc.IngestServiceStub, Published],
) -> None:
    client, published = stub
    sent = 0

    async def endless() -> AsyncIterator[ingest_service_pb2.SendEventRequest]:
        nonlocal sent
        while True:
            sent += 1
            yield request(summary="")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(client.SendEvents(endless()), 20)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert f"events: {grpc_api.MAX_STREAM_ERRORS} bad events by events[99]" in details
    assert sent < grpc_api.MAX_STREAM_EVENTS
    assert not published.alerts


async def test_a_stream_over_its_byte_limit_is_refused_as_it_arrives(
    stub: tuple[ingest_service_pb2_grpc.IngestServiceStub, Published],
) -> None:
    client, published = stub
    sent = 0

    async def big() -> AsyncIterator[ingest_service_pb2.SendEventRequest]:
        nonlocal sent
        for i in range(40):  # 40 of 400 KB: 16 MB
            sent += 1
            yield request(dedup_key=f"b{i}", custom_details=details({"x": "x" * 400_000}))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.SendEvents(big())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"events: more than {grpc_api.MAX_STREAM_BYTES:,} bytes by events[" in (
        caught.value.details() or ""
    )
    assert not published.alerts


def unparsable() -> list[tuple[bytes, str]]:
    """Request bytes protobuf refuses, and what the answer says."""
    deep = ingest_service_pb2.SendEventRequest()
    deep.custom_details.update(nested(40))
    return [
        (b"\x22\x02\xff\xfe", "(request): has a string field that is not valid UTF-8"),
        (deep.SerializeToString(), "(request): is nested too deeply to parse"),
    ]


@pytest.mark.parametrize(("raw", "says"), unparsable(), ids=["not UTF-8", "40 deep"])
async def test_a_request_protobuf_cannot_parse_is_invalid_argument_not_unknown(
    raw: bytes, says: str, stub: tuple[ingest_service_pb2_grpc.IngestServiceStub, Published]
) -> None:
    client, published = stub
    channel = client.channel  # type: ignore[attr-defined]
    send_event = channel.unary_unary("/tocsin.v1.IngestService/SendEvent")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send_event(raw)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(says)

    async def stream() -> AsyncIterator[bytes]:
        yield request(dedup_key="fine").SerializeToString()
        yield raw

    send_events = channel.stream_unary("/tocsin.v1.IngestService/SendEvents")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send_events(stream())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(says)
    assert not published.alerts


class Exploding(ingest_service_pb2_grpc.IngestServiceServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def SendEvent(self, request: Any, context: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "details"),
    [
        (RuntimeError("secret internals"), grpc.StatusCode.INTERNAL, "internal error (reference"),
        (InvalidInput([FieldError("x", "is bad")]), grpc.StatusCode.INVALID_ARGUMENT, "x: is bad"),
    ],
)
async def test_what_escapes_a_servicer_is_mapped_never_unknown(
    error: Exception, code: grpc.StatusCode, details: str
) -> None:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(Exploding(error), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ingest_service_pb2_grpc.IngestServiceStub(channel).SendEvent(request())
    finally:
        await server.stop(None)
    assert caught.value.code() == code
    assert (caught.value.details() or "").startswith(details)
    assert "secret internals" not in (caught.value.details() or "")


# --- alerts.raw: every bad kind dead-lettered, the partition moves on -----------------------


class Letters:
    """The consumer's producer: dead letters kept; flush does nothing."""

    def __init__(self) -> None:
        self.letters: list[tuple[ConsumerRecord[bytes, bytes], str]] = []

    async def dead_letter(
        self, topic: Any, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        reason.encode("utf-8")
        self.letters.append((record, reason))

    async def flush(self) -> None:
        return None


def record(
    offset: int, value: bytes | None, fmt: str = "events_v2"
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="alerts.raw", partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=None, value=value, checksum=None, serialized_key_size=0,
        serialized_value_size=len(value or b""),
        headers=[("tocsin-format", fmt.encode()), ("tocsin-routing-key", KEY.encode())],
    )  # fmt: skip


@pytest.fixture
async def consumer(config: ConfigStore) -> AsyncIterator[tuple[RawConsumer, Published, Letters]]:
    from tocsin_common.clock import FakeClock

    published, letters = Published(), Letters()
    loop = RawConsumer(
        bootstrap="127.0.0.1:1", service="alert-ingest", config=config,
        publisher=published, producer=letters, clock=FakeClock(), traced=False,  # type: ignore[arg-type]
    )  # fmt: skip
    yield loop, published, letters


def good(offset: int) -> ConsumerRecord[bytes, bytes]:
    return record(offset, v2(dedup=f'"good-{offset}"'))


async def test_a_partition_with_every_bad_kind_dead_letters_each_and_moves_on(
    consumer: tuple[RawConsumer, Published, Letters],
) -> None:
    loop, published, letters = consumer
    records = [good(0)]
    for case in CASES:
        records.append(record(len(records), case.body, case.fmt))
    records.append(record(len(records), b"\x00" * (raw_consumer.MAX_RECORD_BYTES + 10)))
    records.append(good(len(records)))
    last = await loop._process_partition(TopicPartition("alerts.raw", 0), records)
    assert last == records[-1].offset
    assert [a.dedup_key for a in published.alerts] == ["good-0", f"good-{records[-1].offset}"]
    assert [r.offset for r, _ in letters.letters] == [r.offset for r in records[1:-1]]
    for (letter, reason), case in zip(letters.letters, CASES, strict=False):
        assert letter.value == case.body  # the original bytes
        assert case.field.split(".")[0].split("[")[0] in reason


async def test_any_exception_while_decoding_dead_letters_the_record(
    consumer: tuple[RawConsumer, Published, Letters], monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, _published, letters = consumer

    def broken(*args: Any) -> Any:
        raise KeyError("a bug in a parser")

    monkeypatch.setattr(formats, "normalize", broken)
    records = [good(0), good(1)]
    last = await loop._process_partition(TopicPartition("alerts.raw", 0), records)
    assert last == 1
    assert [r.offset for r, _ in letters.letters] == [0, 1]
    reason = letters.letters[0][1]
    assert reason.startswith("unprocessable: (record): could not be decoded (KeyError:")
    assert letters.letters[0][0].value == records[0].value


def test_webhook_fields_tools_fill_in_are_not_refused_for_length(config: ConfigStore) -> None:
    """Alertmanager's generatorURL carries a whole PromQL query, groupKey every grouping
    label: bounded by the body and alert sizes, never refused for the text cap."""
    long_url = "http://prometheus:9090/graph?g0.expr=" + "x" * 20_000
    body = json.dumps(
        {"version": "4", "groupKey": "{}:{" + "l" * 10_000 + "}", "externalURL": long_url,
         "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "generatorURL": long_url}]}
    ).encode()  # fmt: skip
    headers = [("tocsin-format", b"alertmanager"), ("tocsin-routing-key", KEY.encode())]
    (alert,) = decode_record(headers, body, config.current, NOW)
    assert alert.links[0].href == long_url
    assert len(alert.details["groupKey"]) == 10_005


async def test_change_lifecycle_fields_over_http(http: tuple[Served, Published]) -> None:
    client, published = http
    started = {
        "routing_key": KEY,
        "payload": {
            "summary": "deploy 1.4.2",
            "change_id": "deploy-8812",
            "kind": "deploy",
            "status": "started",
            "version": "1.4.2",
            "environment": "production",
        },
    }
    response = await client.post(
        "/v2/change/enqueue", data=json.dumps(started).encode(), headers=JSON
    )
    assert response.status == 202
    change = published.changes[-1]
    assert (change.change_id, change.kind, change.status, change.version) == (
        "deploy-8812",
        alert_pb2.CHANGE_KIND_DEPLOY,
        alert_pb2.CHANGE_STATUS_STARTED,
        "1.4.2",
    )
    processable_change(change)
    rollback = {"routing_key": KEY, "payload": {"summary": "undo", "kind": "rollback"}}
    response = await client.post(
        "/v2/change/enqueue", data=json.dumps(rollback).encode(), headers=JSON
    )
    assert response.status == 400
    fields = (await response.json())["fields"]
    assert fields == [
        {
            "field": "payload.rollback_of",
            "problem": "is required for a rollback: the change it undoes",
        }
    ]
    assert len(published.changes) == 1
