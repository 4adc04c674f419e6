"""alert-ingest alone: durable events accepted per second, three ways.

    python -m bench.ingest_bench --events 5000 --out bench/results/ingest.json

- single-event HTTP: POST /v2/enqueue, one event per request, `--concurrency` clients;
- batched Alertmanager webhooks: `--batch` alerts per POST;
- the Kafka `alerts.raw` topic: records produced straight to Kafka, counted when their
  normalized alerts are on `alerts.normalized`.

Every count is of events answered 202 (or normalized), i.e. durable on Kafka. Runs one
alert-ingest process against TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL, with tracing off
and rate limits high enough not to interfere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.results_io import add_out_argument, report
from tests.integration.harness import ServiceProcess, free_port, infra_from_env

KEY = "benchingest000000000000000000001"
CONFIG = {
    "version": 1,
    "services": [
        {
            "id": "bench-ingest",
            "name": "Bench ingest",
            "escalation_policy": "bench-ingest",
            "integrations": [
                {"key": KEY, "type": "any", "name": "bench", "rate_limit_per_minute": 100_000_000}
            ],
        }
    ],
    "users": [{"id": "nobody", "name": "Nobody", "email": "nobody@example.com"}],
    "escalation_policies": [
        {
            "id": "bench-ingest",
            "name": "Bench",
            "levels": [{"delay": "30m", "targets": [{"type": "user", "id": "nobody"}]}],
        }
    ],
}


async def single_events(url: str, count: int, concurrency: int) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(concurrency)
    accepted = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        body = {
            "routing_key": KEY,
            "event_action": "trigger",
            "dedup_key": uuid.uuid4().hex,
            "payload": {"summary": "bench", "source": "bench", "severity": "critical"},
        }
        async with semaphore, session.post(f"{url}/v2/enqueue", json=body) as response:
            await response.read()
            accepted += response.status == 202

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(count)))
        seconds = time.perf_counter() - started
    return {
        "events": count,
        "accepted": accepted,
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds, 1),
    }


def alertmanager_batch(size: int) -> dict[str, Any]:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "Bench", "instance": uuid.uuid4().hex, "severity": "critical"},
            "annotations": {"summary": "bench"},
            "startsAt": "2026-11-26T13:28:57Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": uuid.uuid4().hex[:16],
        }
        for _ in range(size)
    ]
    return {
        "version": "4",
        "status": "firing",
        "receiver": "tocsin",
        "alerts": alerts,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://bench",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }


async def batched(url: str, count: int, batch: int, concurrency: int) -> dict[str, Any]:
    requests = max(1, count // batch)
    semaphore = asyncio.Semaphore(concurrency)
    accepted = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        async with (
            semaphore,
            session.post(
                f"{url}/v1/webhooks/alertmanager/{KEY}", json=alertmanager_batch(batch)
            ) as response,
        ):
            await response.read()
            if response.status == 202:
                accepted += batch

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(requests)))
        seconds = time.perf_counter() - started
    return {
        "events": requests * batch,
        "batch": batch,
        "accepted": accepted,
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds, 1),
    }


async def raw_topic(bootstrap: str, count: int) -> dict[str, Any]:
    """Produce `count` Events v2 records to alerts.raw; time until all are normalized."""
    marker = uuid.uuid4().hex[:8]
    consumer = AIOKafkaConsumer(
        "alerts.normalized",
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # join; start from the end
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    started = time.perf_counter()
    for n in range(count):
        body = json.dumps(
            {
                "routing_key": KEY,
                "event_action": "trigger",
                "dedup_key": f"{marker}-{n}",
                "payload": {"summary": "bench", "source": "bench", "severity": "critical"},
            }
        ).encode()
        await producer.send(
            "alerts.raw", body, key=KEY.encode(), headers=[("tocsin-format", b"events_v2")]
        )
    await producer.flush()
    seen = 0
    deadline = time.perf_counter() + 300
    while seen < count and time.perf_counter() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        seen += sum(1 for rs in batch.values() for r in rs if marker.encode() in (r.value or b""))
    seconds = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    return {
        "events": count,
        "normalized": seen,
        "seconds": round(seconds, 2),
        "events_per_s": round(seen / seconds, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap, redis_url = infra_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-ingest-"))
    config = workdir / "tocsin.yaml"
    config.write_text(json.dumps(CONFIG))
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": bootstrap,
        "TOCSIN_REDIS_URL": redis_url,
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(metrics_port),
        "TOCSIN_HTTP_PORT": str(http_port),
        "OTEL_TRACES_EXPORTER": "none",
        "TOCSIN_LOG_LEVEL": "WARNING",
    }
    ingest = ServiceProcess(
        "alert-ingest", "tocsin_ingest", env, workdir / "ingest.log", grpc_port, http_port
    )
    ingest.start()
    try:
        await ingest.wait_healthy()
        url = f"http://127.0.0.1:{http_port}"
        await single_events(url, 200, args.concurrency)  # warm up connections and code paths
        return {
            "bench": "alert-ingest",
            "cpus": os.cpu_count(),
            "single_event_http": await single_events(url, args.events, args.concurrency),
            "alertmanager_batched": await batched(url, args.events * 4, args.batch, 8),
            "kafka_alerts_raw": await raw_topic(bootstrap, args.events * 2),
        }
    finally:
        ingest.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    add_out_argument(parser)
    args = parser.parse_args()
    report(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
