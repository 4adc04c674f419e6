"""alert-ingest as the front door, against the real Kafka and Redis, as stories:

every format a monitoring tool speaks (Events v2, change events, Alertmanager, Grafana,
gRPC, Kafka alerts.raw) becomes a normalized record on Kafka before the sender hears 2xx;
bad input gets a clear answer (400 with every field, 413, 429 with Retry-After) or a dead
letter with the original bytes, and the service keeps serving; a heartbeat that stops
pinging raises an alert that the next ping resolves.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tocsin.v1 import (
    alert_pb2,
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
)
from tocsin_common.auth.access import bearer_interceptors
from tocsin_common.kafka import EventProducer

from tests.integration.harness import ServiceProcess, Stack, free_port

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "unit"
CHECKOUT_KEY = "itcheckout0000000000000000000001"
PAYMENTS_KEY = "itpayments0000000000000000000001"
# Keys of the extra ingest process started by `ingest` below (its own configuration).
AM_KEY = "italertmanager000000000000000001"
GRAFANA_KEY = "itgrafana00000000000000000000001"
LIMITED_KEY = "itlimited00000000000000000000001"
HEARTBEAT = f"it-heartbeat-{uuid.uuid4().hex[:8]}"

INGEST_CONFIG = f"""
version: 1
services:
  - id: checkout
    name: Checkout API
    escalation_policy: primary
    integrations:
      - {{key: {AM_KEY}, type: alertmanager}}
      - {{key: {GRAFANA_KEY}, type: grafana}}
      - {{key: {LIMITED_KEY}, type: events_v2, rate_limit_per_minute: 3}}
heartbeats:
  - {{id: {HEARTBEAT}, service: checkout, interval: 1s, grace: 0s, severity: warning}}
users:
  - {{id: alice, name: Alice, email: alice@example.com}}
escalation_policies:
  - id: primary
    name: Primary
    levels: [{{delay: 5m, targets: [{{type: user, id: alice}}]}}]
"""


def sample(name: str) -> dict[str, Any]:
    """A body Alertmanager 0.25 POSTed, as captured (tests/fixtures/alertmanager/)."""
    from tests.unit.test_ingest_alertmanager import sample as captured

    result: dict[str, Any] = captured(name)
    return result


class TopicReader:
    """Reads a topic from its end at start() on: what the test itself causes."""

    def __init__(self, bootstrap: str, topic: str, decode: Callable[[bytes], Any]) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._topic = topic
        self._decode = decode
        self.records: list[tuple[Any, Any]] = []  # (ConsumerRecord, decoded value)

    async def start(self) -> None:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self._topic)
        while not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is produced
            await self._consumer.position(tp)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(
        self,
        predicate: Callable[[Any], bool],
        count: int = 1,
        timeout: float = 20,
        distinct: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """The matching records once there are `count` of them (of distinct `distinct(v)`,
        when given: delivery is at least once, so a record may come twice)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [v for _, v in self.records if predicate(v)]
            seen = len(found) if distinct is None else len({distinct(v) for v in found})
            if seen >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen}/{count} matching records on {self._topic}")
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                self.records += [(r, self._decode(r.value)) for r in records]


def _alert(raw: bytes) -> alert_pb2.Alert:
    return alert_pb2.Alert.FromString(raw)


@pytest.fixture(scope="module")
async def alerts(stack: Stack) -> AsyncIterator[TopicReader]:
    reader = TopicReader(stack.bootstrap, "alerts.normalized", _alert)
    await reader.start()
    yield reader
    await reader.stop()


@pytest.fixture(scope="module")
async def ingest_process(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    """A second alert-ingest with typed, rate-limited keys and a heartbeat; it leaves
    alerts.raw to the stack's ingest. Yields its base URL and its gRPC target."""
    workdir = tmp_path_factory.mktemp("ingest")
    config = workdir / "tocsin.yaml"
    config.write_text(INGEST_CONFIG)
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": stack.bootstrap,
        "TOCSIN_REDIS_URL": stack.redis_url,
        "TOCSIN_SERVICE_SECRET": stack.service_secret,
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(free_port()),
        "TOCSIN_HTTP_PORT": str(http_port),
        "TOCSIN_INGEST_CONSUME_RAW": "0",
        "TOCSIN_INGEST_HEARTBEAT_CHECK_SECONDS": "0.2",
        "OTEL_TRACES_EXPORTER": "none",
    }
    process = ServiceProcess(
        "alert-ingest-2", "tocsin_ingest", env, workdir / "ingest.log", grpc_port, http_port
    )
    process.start()
    try:
        await process.wait_healthy()
        yield f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    finally:
        process.kill()


@pytest.fixture(scope="module")
def ingest(ingest_process: tuple[str, str]) -> str:
    return ingest_process[0]


async def post(url: str, body: Any = None, *, raw: bytes | None = None, **kw: Any) -> Any:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers, **kw) as r,
    ):
        text = await r.text()
        return r.status, (json.loads(text) if text.startswith("{") else text), r.headers


def v2(dedup_key: str | None = None, key: str = CHECKOUT_KEY, **payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": key,
        "event_action": "trigger",
        "payload": {"summary": "queue backlog", "source": "worker-3", "severity": "warning"}
        | payload,
    }
    if dedup_key:
        body["dedup_key"] = dedup_key
    return body


# --- every format becomes a normalized alert -------------------------------------------------


async def test_an_events_v2_trigger_is_on_kafka_when_the_202_arrives(
    stack: Stack, alerts: TopicReader
) -> None:
    key = f"it-v2-{uuid.uuid4().hex}"
    status, body, _ = await post(
        f"{stack.ingest_url}/v2/enqueue", v2(key, custom_details={"depth": 1200})
    )
    assert (status, body) == (
        202,
        {"status": "success", "message": "Event processed", "dedup_key": key},
    )
    # A 202 means durable: a fresh reader finds the record without waiting for anything.
    (alert,) = await alerts.wait_for(lambda a: a.dedup_key == key, timeout=5)
    assert alert.service_id == "checkout"
    assert alert.integration_key == CHECKOUT_KEY
    assert alert.action == alert_pb2.ALERT_ACTION_TRIGGER
    assert alert.severity == alert_pb2.SEVERITY_WARNING
    assert (alert.summary, alert.source) == ("queue backlog", "worker-3")
    assert alert.details["depth"] == 1200
    assert alert.source_format == alert_pb2.SOURCE_FORMAT_EVENTS_V2
    record = next(r for r, a in alerts.records if a.dedup_key == key)
    assert record.key == b"checkout"


async def test_a_trigger_without_dedup_key_gets_one_generated_and_stable(stack: Stack) -> None:
    summary = f"generated key {uuid.uuid4().hex}"
    first = await post(f"{stack.ingest_url}/v2/enqueue", v2(summary=summary))
    second = await post(f"{stack.ingest_url}/v2/enqueue", v2(summary=summary))
    assert first[0] == second[0] == 202
    assert first[1]["dedup_key"] == second[1]["dedup_key"]
    assert len(first[1]["dedup_key"]) == 32


async def test_a_change_event_goes_to_the_changes_topic(stack: Stack) -> None:
    reader = TopicReader(stack.bootstrap, "changes", alert_pb2.ChangeEvent.FromString)
    await reader.start()
    try:
        summary = f"Deployed checkout {uuid.uuid4().hex[:8]}"
        status, body, _ = await post(
            f"{stack.ingest_url}/v2/change/enqueue",
            {
                "routing_key": PAYMENTS_KEY,
                "payload": {"summary": summary, "source": "argo", "custom_details": {"v": 42}},
                "links": [{"href": "https://ci.example.com/42", "text": "build"}],
            },
        )
        assert (status, body) == (202, {"status": "success", "message": "Change event processed"})
        (change,) = await reader.wait_for(lambda c: c.summary == summary, timeout=5)
        assert change.service_id == "payments"
        assert change.details["v"] == 42
        assert change.links[0].href == "https://ci.example.com/42"
        assert next(r for r, c in reader.records if c.summary == summary).key == b"payments"
    finally:
        await reader.stop()


async def test_alertmanager_notifications_trigger_and_resolve_by_fingerprint(
    ingest: str, alerts: TopicReader
) -> None:
    firing = sample("alertmanager-0.25-webhook-firing.json")
    suffix = uuid.uuid4().hex[:8]
    for entry in firing["alerts"]:
        entry["fingerprint"] += suffix
    status, body, _ = await post(f"{ingest}/v1/webhooks/alertmanager/{AM_KEY}", firing)
    assert status == 202, body
    fingerprints = [f"711c95e367dfcd66{suffix}", f"35741a35a97e38e6{suffix}"]
    assert body["dedup_keys"] == fingerprints
    triggered = await alerts.wait_for(lambda a: a.dedup_key in fingerprints, count=2)
    assert {a.action for a in triggered} == {alert_pb2.ALERT_ACTION_TRIGGER}
    first = next(a for a in triggered if a.dedup_key == fingerprints[0])
    assert first.labels["instance"] == "checkout-7d9f:8080"
    assert first.severity == alert_pb2.SEVERITY_CRITICAL
    assert first.summary == "5xx ratio above 5% for 5m"
    assert first.details["description"] == "checkout is failing 7.2% of requests"
    assert first.links[0].href.startswith("http://prometheus.example.com:9090/graph")
    assert first.source_format == alert_pb2.SOURCE_FORMAT_ALERTMANAGER

    resolved = sample("alertmanager-0.25-webhook-partly-resolved.json")
    for entry in resolved["alerts"]:
        entry["fingerprint"] += suffix
    status, _, _ = await post(
        f"{ingest}/v1/webhooks/alertmanager",
        resolved,
        headers={"Authorization": f"Bearer {AM_KEY}"},
    )
    assert status == 202
    (done,) = await alerts.wait_for(
        lambda a: a.dedup_key == fingerprints[0] and a.action == alert_pb2.ALERT_ACTION_RESOLVE
    )
    assert done.service_id == "checkout"


async def test_a_grafana_notification_becomes_an_alert(ingest: str, alerts: TopicReader) -> None:
    from tests.unit.test_ingest_grafana import GRAFANA

    body = json.loads(json.dumps(GRAFANA))
    fingerprint = f"grafana-{uuid.uuid4().hex}"
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["fingerprint"] = fingerprint
    status, answer, _ = await post(
        f"{ingest}/v1/webhooks/grafana", body, headers={"Authorization": f"Bearer {GRAFANA_KEY}"}
    )
    assert status == 202, answer
    (alert,) = await alerts.wait_for(lambda a: a.dedup_key == fingerprint)
    assert alert.source_format == alert_pb2.SOURCE_FORMAT_GRAFANA
    assert alert.summary == "High memory usage"
    assert alert.details["valueString"].startswith("[ var='B'")
    assert [link.text for link in alert.links] == ["Source", "Dashboard", "Panel", "Silence"]


async def test_grpc_send_event_and_send_events(stack: Stack, alerts: TopicReader) -> None:
    keys = [f"it-grpc-{uuid.uuid4().hex}" for _ in range(4)]

    def request(key: str, **kw: Any) -> ingest_service_pb2.SendEventRequest:
        fields: dict[str, Any] = {
            "routing_key": PAYMENTS_KEY,
            "action": alert_pb2.ALERT_ACTION_TRIGGER,
            "dedup_key": key,
            "summary": "card declines up",
            "source": "psp",
            "severity": alert_pb2.SEVERITY_ERROR,
        }
        return ingest_service_pb2.SendEventRequest(**(fields | kw))

    async with grpc.aio.insecure_channel(stack.grpc_target("alert-ingest")) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
        reply = await stub.SendEvent(request(keys[0], labels={"psp": "adyen"}))
        assert reply.dedup_key == keys[0] and reply.event_id

        async def stream() -> AsyncIterator[ingest_service_pb2.SendEventRequest]:
            for key in keys[1:]:
                yield request(key)

        replies = await stub.SendEvents(stream())
        assert (replies.accepted, list(replies.dedup_keys)) == (3, keys[1:])

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendEvent(request("x", routing_key="nosuchkey"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "routing_key: is not a known integration key"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendEvent(request("x", summary="", severity=0))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "summary: must not be empty; severity: is required"

        async def bad_stream() -> AsyncIterator[ingest_service_pb2.SendEventRequest]:
            yield request("it-grpc-never-published")
            yield request("y", action=0)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendEvents(bad_stream())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "events[1].action: is required"

    found = await alerts.wait_for(lambda a: a.dedup_key in keys, count=4)
    assert {a.source_format for a in found} == {alert_pb2.SOURCE_FORMAT_GRPC}
    assert next(a for a in found if a.dedup_key == keys[0]).labels["psp"] == "adyen"
    await asyncio.sleep(0.5)
    assert not [a for _, a in alerts.records if a.dedup_key == "it-grpc-never-published"]


# --- bad input: a clear answer, and the service keeps serving ---------------------------------


async def test_bad_requests_are_answered_400_with_every_field(stack: Stack, ingest: str) -> None:
    url = f"{stack.ingest_url}/v2/enqueue"
    status, body, _ = await post(url, raw=b'{"routing_key": ')
    assert status == 400 and body["fields"][0]["field"] == "(body)"
    assert body["status"] == "invalid event"
    assert body["errors"][0].startswith("(body): is not valid JSON")

    status, body, _ = await post(
        url,
        {
            "routing_key": CHECKOUT_KEY,
            "event_action": "trigger",
            "dedup_key": "k" * 300,
            "payload": {"summary": 5, "severity": "bad"},
            "links": "x",
        },
    )
    assert status == 400
    assert {f["field"] for f in body["fields"]} == {
        "dedup_key",
        "links",
        "payload.summary",
        "payload.source",
        "payload.severity",
    }
    assert "payload.summary: must be a string, not number" in body["errors"]
    status, body, _ = await post(url, v2() | {"event_action": "explode"})
    assert status == 400
    assert body["errors"] == ["event_action: must be one of trigger, acknowledge, resolve"]

    status, body, _ = await post(
        f"{ingest}/v1/webhooks/alertmanager/{AM_KEY}",
        {"version": "4", "alerts": [{"status": "firing"}, {"labels": []}]},
    )
    assert status == 400
    assert [f["field"] for f in body["fields"]] == [
        "alerts[0].labels",
        "alerts[1].status",
        "alerts[1].labels",
    ]


async def test_unknown_or_mismatched_keys_are_refused_naming_where_the_key_was(
    stack: Stack, ingest: str
) -> None:
    status, body, _ = await post(f"{ingest}/v1/webhooks/alertmanager/nosuchkey", {})
    assert status == 400
    assert body["fields"] == [{"field": "path.key", "problem": "is not a known integration key"}]
    status, body, _ = await post(
        f"{ingest}/v1/webhooks/grafana", {}, headers={"Authorization": "Bearer nosuchkey"}
    )
    assert status == 400
    assert body["fields"] == [
        {"field": "Authorization", "problem": "is not a known integration key"}
    ]
    status, body, _ = await post(f"{ingest}/v1/webhooks/grafana", {})
    assert status == 400 and body["fields"][0]["field"] == "Authorization"
    status, body, _ = await post(f"{ingest}/v1/webhooks/grafana/{AM_KEY}", {})
    assert status == 400
    assert body["fields"] == [
        {
            "field": "path.key",
            "problem": "belongs to an integration of type alertmanager, "
            "which does not accept grafana events",
        }
    ]


async def test_a_body_over_512_kb_is_refused_with_413(stack: Stack) -> None:
    huge = json.dumps(v2("big", summary="x" * (600 * 1024))).encode()
    status, body, _ = await post(f"{stack.ingest_url}/v2/enqueue", raw=huge)
    assert status == 413
    assert body["fields"][0]["field"] == "(body)"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i : i + 64 * 1024]

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.ingest_url}/v2/enqueue",
            data=chunks(),
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 413
    # ... and the service keeps serving.
    status, _, _ = await post(f"{stack.ingest_url}/v2/enqueue", v2("after-413"))
    assert status == 202


async def test_an_integration_over_its_rate_limit_gets_429_with_retry_after(ingest: str) -> None:
    body = v2(key=LIMITED_KEY)
    statuses = []
    for _ in range(5):
        status, answer, headers = await post(f"{ingest}/v2/enqueue", body)
        statuses.append(status)
    assert statuses == [202, 202, 202, 429, 429]
    assert answer["status"] == "throttle event"
    retry_after = int(headers["Retry-After"])
    assert 1 <= retry_after <= 120
    assert answer["retry_after"] == retry_after


# --- Kafka alerts.raw --------------------------------------------------------------------------


async def test_alerts_raw_good_records_flow_and_bad_ones_are_dead_lettered(
    stack: Stack, alerts: TopicReader
) -> None:
    dead = TopicReader(stack.bootstrap, "alerts.deadletter", alert_pb2.DeadLetter.FromString)
    await dead.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    run = uuid.uuid4().hex[:8]
    key = f"raw-{run}".encode()  # one key: one partition, in this order
    am = sample("alertmanager-0.25-webhook-firing.json")
    am["alerts"] = am["alerts"][:1]
    am["alerts"][0]["fingerprint"] = f"raw-am-{run}"
    records: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (
            json.dumps(v2(f"raw-v2-{run}")).encode(),
            [("tocsin-format", b"events_v2")],
        ),
        (b"\x00not json", [("tocsin-format", b"events_v2")]),
        (json.dumps(am).encode(), [("tocsin-format", b"nagios")]),
        (
            json.dumps(am).encode(),
            [("tocsin-format", b"alertmanager"), ("tocsin-routing-key", b"nosuchkey")],
        ),
        (
            json.dumps({"routing_key": CHECKOUT_KEY, "alerts": [{"status": "x"}]}).encode(),
            [("tocsin-format", b"grafana")],
        ),
        (
            json.dumps(am).encode(),
            [("tocsin-format", b"alertmanager"), ("tocsin-routing-key", PAYMENTS_KEY.encode())],
        ),
    ]
    try:
        sent = [
            await producer.send_and_wait("alerts.raw", value, key=key, headers=headers)
            for value, headers in records
        ]
        good = await alerts.wait_for(
            lambda a: a.dedup_key in (f"raw-v2-{run}", f"raw-am-{run}"), count=2, timeout=30
        )
        assert {(a.dedup_key, a.service_id) for a in good} == {
            (f"raw-v2-{run}", "checkout"),
            (f"raw-am-{run}", "payments"),  # the good record after the bad ones still flows
        }
        letters = await dead.wait_for(lambda d: d.original_key == key, count=4, timeout=30)
    finally:
        await producer.stop()
        await dead.stop()
    by_offset = {d.source_offset: d for d in letters}
    bad = {meta.offset: records[i] for i, meta in enumerate(sent) if i in (1, 2, 3, 4)}
    assert set(by_offset) == set(bad)
    for offset, (value, _) in bad.items():
        letter = by_offset[offset]
        assert letter.original_value == value
        assert letter.source_topic == "alerts.raw"
        assert letter.source_partition == sent[0].partition
        assert letter.failed_service == "alert-ingest"
    reasons = [by_offset[sent[i].offset].reason for i in (1, 2, 3, 4)]
    assert reasons[0].startswith("undecodable: (body): is not UTF-8") or reasons[0].startswith(
        "undecodable: (body): is not valid JSON"
    )
    assert reasons[1].startswith("unknown format: tocsin-format: 'nagios'")
    assert reasons[2] == "unknown key: tocsin-routing-key: is not a known integration key"
    assert reasons[3].startswith("invalid event: alerts[0].status: must be one of")
    assert by_offset[sent[2].offset].original_headers["tocsin-format"] == b"nagios"


# --- heartbeats --------------------------------------------------------------------------------


async def test_a_silent_heartbeat_triggers_once_and_the_next_ping_resolves(
    stack: Stack, ingest_process: tuple[str, str], alerts: TopicReader
) -> None:
    ingest, grpc_target = ingest_process
    dedup_key = f"heartbeat:{HEARTBEAT}"
    async with grpc.aio.insecure_channel(
        grpc_target, interceptors=bearer_interceptors(stack.admin_token)
    ) as channel:
        issued = await heartbeat_service_pb2_grpc.HeartbeatServiceStub(channel).IssuePingUrl(
            heartbeat_service_pb2.IssuePingUrlRequest(heartbeat_id=HEARTBEAT)
        )
    ping_url = issued.ping_url
    assert ping_url.startswith(f"{ingest}/v1/heartbeats/{HEARTBEAT}/ping/hbs_")
    async with aiohttp.ClientSession() as session:
        async with session.post(ping_url) as r:
            assert r.status == 200
            assert (await r.json())["heartbeat"] == HEARTBEAT
        (missed,) = await alerts.wait_for(
            lambda a: a.dedup_key == dedup_key and a.action == alert_pb2.ALERT_ACTION_TRIGGER,
            timeout=10,
        )
        assert missed.service_id == "checkout"
        assert missed.source_format == alert_pb2.SOURCE_FORMAT_HEARTBEAT
        assert missed.severity == alert_pb2.SEVERITY_WARNING
        await asyncio.sleep(1.5)  # still silent: no second trigger
        async with session.get(ping_url) as r:
            assert r.status == 200
            assert (await r.json())["resolved"] is True
        await alerts.wait_for(
            lambda a: a.dedup_key == dedup_key and a.action == alert_pb2.ALERT_ACTION_RESOLVE,
            timeout=5,
        )
        triggers = [
            a
            for _, a in alerts.records
            if a.dedup_key == dedup_key and a.action == alert_pb2.ALERT_ACTION_TRIGGER
        ]
        assert len(triggers) == 1
        secret = ping_url.rsplit("/", 1)[1]
        async with session.get(f"{ingest}/v1/heartbeats/no-such-monitor/ping/{secret}") as r:
            assert r.status == 404
            assert (await r.json())["fields"][0]["field"] == "path"


# --- durability ---------------------------------------------------------------------------------


async def test_the_producer_is_idempotent_with_acks_all(stack: Stack) -> None:
    producer = EventProducer(stack.bootstrap, "alert-ingest")
    inner: Any = producer._producer
    assert inner._txn_manager is not None  # enable_idempotence=True
    assert inner._sender._acks == -1  # acks=all
    await producer.start()
    await producer.stop()
