"""alert-ingest's fast paths against the real Kafka and Redis, as stories:

replicas admit from rate-limit leases and together never pass the limit; one alert-ingest
runs several worker processes on one port, every event answered 202 is on Kafka in its
service's partition, a sender's trace context reaches the record even with spans off, and
the workers go away with the process that started them; an
alerts.raw batch with bad records in it is dead-lettered record by record and the good
ones around them flow.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis
from tocsin.v1 import alert_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.secrets import generate_secret
from tocsin_ingest.redis_state import RedisRateLimiter

from tests.integration.harness import ServiceProcess, free_port, infra_from_env
from tests.integration.test_ingest_front_door import TopicReader

pytestmark = pytest.mark.integration

KEY = "itworkers000000000000000000000001"
CONFIG = f"""
version: 1
services:
  - id: fastpath
    name: Fast path
    escalation_policy: p
    integrations: [{{key: {KEY}, rate_limit_per_minute: 100000000}}]
escalation_policies:
  - {{id: p, name: P, levels: [{{delay: 5m, targets: [{{type: user, id: u}}]}}]}}
users: [{{id: u, name: U, email: u@example.com}}]
"""
# For alerts.raw: a key the session stack's configuration knows too, since its ingest is
# in the same consumer group and may be the member that reads the records. The events
# resolve keys nobody triggered: correlation drops them, so the stack pages no one.
SHARED_KEY = "itcheckout0000000000000000000001"
RAW_CONFIG = CONFIG.replace(
    "escalation_policies:",
    f"""  - id: checkout
    name: Checkout
    escalation_policy: p
    integrations: [{{key: {SHARED_KEY}}}]
escalation_policies:""",
)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    _, redis_url = infra_from_env()
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_replicas_admitting_from_leases_together_admit_exactly_the_limit(
    redis: Redis,
) -> None:
    key = f"itlease-{uuid.uuid4().hex}"
    clock = FakeClock(datetime(2026, 11, 26, 12, 0, 20, tzinfo=UTC))  # mid-window
    replicas = [RedisRateLimiter(redis, clock) for _ in range(2)]
    limit = 200  # leases of 4
    admitted = [0, 0]
    refused = [False, False]
    while not all(refused):
        for i, replica in enumerate(replicas):
            if refused[i]:
                continue
            decision = await replica.admit(key, limit, 1)
            if decision.allowed:
                admitted[i] += 1
            else:
                refused[i] = True
                assert decision.retry_after >= 1
    assert sum(admitted) == limit
    assert min(admitted) > 0
    # Redis counted every leased event: exactly what was admitted.
    (counted,) = [int(v) for v in await redis.mget(f"tocsin:ingest:ratelimit:{key}:29928240")]
    assert counted == limit


async def test_concurrent_requests_of_one_key_share_a_lease(redis: Redis) -> None:
    key = f"itlease-{uuid.uuid4().hex}"
    clock = FakeClock(datetime(2026, 11, 26, 12, 0, 20, tzinfo=UTC))
    limiter = RedisRateLimiter(redis, clock)
    decisions = await asyncio.gather(*(limiter.admit(key, 5000, 1) for _ in range(100)))
    assert all(d.allowed for d in decisions)
    # 100 requests, leases of 100: one lease, not one per request.
    (counted,) = [int(v) for v in await redis.mget(f"tocsin:ingest:ratelimit:{key}:29928240")]
    assert counted == 100


async def _post_events(url: str, count: int, connections: int) -> list[tuple[int, str]]:
    run = uuid.uuid4().hex[:8]
    answers: list[tuple[int, str]] = []
    queue = list(range(count))

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while queue:
                n = queue.pop()
                body = {
                    "routing_key": KEY,
                    "event_action": "trigger",
                    "dedup_key": f"it-workers-{run}-{n}",
                    "payload": {"summary": "s", "source": "x", "severity": "info"},
                }
                async with session.post(f"{url}/v2/enqueue", json=body) as r:
                    answers.append((r.status, (await r.json())["dedup_key"]))

    await asyncio.gather(*(client() for _ in range(connections)))
    return answers


def _produced(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("tocsin_kafka_messages_produced_total") and "alerts.normalized" in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_workers_share_the_port_and_every_202_is_on_kafka_in_the_service_partition(
    tmp_path: Path,
) -> None:
    bootstrap, redis_url = infra_from_env()
    config = tmp_path / "tocsin.yaml"
    config.write_text(CONFIG)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    free_port()  # metrics of worker 1 is metrics_port + 1: make it unlikely to be taken
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": bootstrap,
        "TOCSIN_REDIS_URL": redis_url,
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(metrics_port),
        "TOCSIN_HTTP_PORT": str(http_port),
        "TOCSIN_INGEST_CONSUME_RAW": "0",
        "TOCSIN_INGEST_WORKERS": "2",
        "OTEL_TRACES_EXPORTER": "none",
    }
    process = ServiceProcess(
        "alert-ingest-workers", "tocsin_ingest", env, tmp_path / "ingest.log", grpc_port, http_port
    )
    alerts = TopicReader(bootstrap, "alerts.normalized", alert_pb2.Alert.FromString)
    await alerts.start()
    process.start()
    try:
        await process.wait_healthy()  # SERVING once both workers listen
        assert process.proc is not None
        pid = process.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1

        answers = await _post_events(f"http://127.0.0.1:{http_port}", 200, connections=32)
        assert {status for status, _ in answers} == {202}
        keys = {key for _, key in answers}
        found = await alerts.wait_for(lambda a: a.dedup_key in keys, count=200, timeout=30)
        assert {a.service_id for a in found} == {"fastpath"}
        partitions = sorted({r.partition for r, a in alerts.records if a.dedup_key in keys})
        all_partitions = sorted(alerts._consumer.partitions_for_topic("alerts.normalized") or ())
        assert partitions == [DefaultPartitioner()(b"fastpath", all_partitions, all_partitions)]

        # Spans are off here (no exporter), yet a sender's trace goes on in the record.
        traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
        traced_key = f"it-workers-traced-{uuid.uuid4().hex}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{http_port}/v2/enqueue",
                json={
                    "routing_key": KEY,
                    "event_action": "trigger",
                    "dedup_key": traced_key,
                    "payload": {"summary": "s", "source": "x", "severity": "info"},
                },
                headers={"traceparent": traceparent},
            ) as r,
        ):
            assert r.status == 202
        await alerts.wait_for(lambda a: a.dedup_key == traced_key)
        record = next(r for r, a in alerts.records if a.dedup_key == traced_key)
        assert dict(record.headers)["traceparent"] == traceparent.encode()
        untraced = next(r for r, a in alerts.records if a.dedup_key in keys)
        assert "traceparent" not in dict(untraced.headers or ())

        async with aiohttp.ClientSession() as session:
            produced = []
            for port in (metrics_port, metrics_port + 1):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                    produced.append(_produced(await r.text()))
        assert sum(produced) == 201
        assert min(produced) > 0  # both workers answered some of the 32 connections

        os.kill(process.proc.pid, signal.SIGKILL)  # worker 0 only: the other must follow
        process.proc.wait()
        for _ in range(100):  # up to 20 s
            if not any(_alive(c) for c in children):
                break
            await asyncio.sleep(0.2)
        assert not [c for c in children if _alive(c)]
    finally:
        process.kill()
        await alerts.stop()


def _alive(pid: str) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status.lower()


async def test_an_alerts_raw_batch_dead_letters_bad_records_and_keeps_the_good_ones(
    tmp_path: Path,
) -> None:
    """Many records on one partition arrive as one batch; the bad ones among them become
    dead letters in place and every good one is normalized."""
    bootstrap, redis_url = infra_from_env()
    config = tmp_path / "tocsin.yaml"
    config.write_text(RAW_CONFIG)
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": bootstrap,
        "TOCSIN_REDIS_URL": redis_url,
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(free_port()),
        "TOCSIN_HTTP_PORT": str(http_port),
        "OTEL_TRACES_EXPORTER": "none",
    }
    process = ServiceProcess(
        "alert-ingest-raw", "tocsin_ingest", env, tmp_path / "ingest.log", grpc_port, http_port
    )
    alerts = TopicReader(bootstrap, "alerts.normalized", alert_pb2.Alert.FromString)
    dead = TopicReader(bootstrap, "alerts.deadletter", alert_pb2.DeadLetter.FromString)
    await alerts.start()
    await dead.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    process.start()
    run = uuid.uuid4().hex[:8]
    record_key = f"raw-batch-{run}".encode()
    try:
        await process.wait_healthy()
        futures = []
        for n in range(300):
            value = (
                b"{not json"
                if n % 50 == 7
                else json.dumps(
                    {
                        "routing_key": SHARED_KEY,
                        "event_action": "resolve",
                        "dedup_key": f"raw-batch-{run}-{n}",
                        "payload": {"summary": "s", "source": "x", "severity": "info"},
                    }
                ).encode()
            )
            futures.append(
                await producer.send(
                    "alerts.raw", value, key=record_key, headers=[("tocsin-format", b"events_v2")]
                )
            )
        sent = [await f for f in futures]
        # This ingest joins the session stack's ingest in the raw consumer group: if the
        # partition moves between them mid-batch, the new owner reads again what the old
        # one had not committed (at least once), so records are counted once each.
        good = await alerts.wait_for(
            lambda a: a.dedup_key.startswith(f"raw-batch-{run}-"),
            count=294,
            timeout=60,
            distinct=lambda a: a.dedup_key,
        )
        expected = {f"raw-batch-{run}-{n}" for n in range(300) if n % 50 != 7}
        assert {a.dedup_key for a in good} == expected
        assert {a.service_id for a in good} == {"checkout"}
        assert {a.action for a in good} == {alert_pb2.ALERT_ACTION_RESOLVE}
        letters = await dead.wait_for(
            lambda d: d.original_key == record_key,
            count=6,
            timeout=30,
            distinct=lambda d: d.source_offset,
        )
        assert sorted({d.source_offset for d in letters}) == [
            sent[n].offset for n in range(300) if n % 50 == 7
        ]
        assert {d.original_value for d in letters} == {b"{not json"}
        assert all(d.reason.startswith("undecodable: (body): is not valid JSON") for d in letters)
    finally:
        await producer.stop()
        process.kill()
        await alerts.stop()
        await dead.stop()
