"""alert-ingest alone: durable events accepted per second, three ways.

    python -m bench.ingest_bench --events 5000 --rounds 3 --out bench/results/ingest.json

- single-event HTTP: POST /v2/enqueue, one event per request, `--concurrency` keep-alive
  connections each with one request outstanding, from a lean HTTP/1.1 client (a few dozen
  lines on asyncio: the load generator shares the two cores with the service and the broker,
  and aiohttp's client costs as much CPU per request as the service does); the same with
  the former aiohttp client is reported too (`single_event_http_aiohttp_client`);
- batched Alertmanager webhooks: `--batch` alerts per POST;
- the Kafka `alerts.raw` topic: records produced straight to Kafka, counted when their
  normalized alerts are on `alerts.normalized`; with one record key (one partition, which
  one worker reads) and with 48 (every partition: `kafka_alerts_raw_many_keys`, what
  scaling out the raw path can use).

Every count is of events answered 202 (or normalized), i.e. durable on Kafka. Runs one
alert-ingest against TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL, with tracing off and rate
limits high enough not to interfere (admitted from leases all the same), once per
`--workers` value (TOCSIN_INGEST_WORKERS), `--rounds` times alternating, and reports
medians, with alert-ingest's CPU time per event (steadier than events/s on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tocsin_common.secrets import generate_secret

from bench.procstat import tree_cpu_seconds
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


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request outstanding at a time: the
    load generator's client, lean so that it leaves the CPU to the service under test.
    Responses must carry Content-Length (alert-ingest's do)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("connection closed"))
        if not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = self._buffer[:end].decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in head[1:]
            if line[:15].lower() == "content-length:"
        )
        if len(self._buffer) < end + 4 + length:
            return
        body = self._buffer[end + 4 : end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        waiter, self._waiter = self._waiter, None
        waiter.set_result((int(head[0].split(" ", 2)[1]), body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _post_request(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def single_events_lean(url: str, count: int, concurrency: int) -> dict[str, Any]:
    """As single_events, over `concurrency` lean keep-alive connections."""
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(_HttpConnection, host, int(port)))[1]
        for _ in range(concurrency)
    ]
    run = uuid.uuid4().hex[:12]
    prefix = f'{{"routing_key": "{KEY}", "event_action": "trigger", "dedup_key": "{run}-'
    suffix = '", "payload": {"summary": "bench", "source": "bench", "severity": "critical"}}'
    issued = accepted = 0

    async def client(connection: _HttpConnection) -> None:
        nonlocal issued, accepted
        while issued < count:
            issued += 1
            body = f"{prefix}{issued}{suffix}".encode()
            status, _ = await connection.request(_post_request(host_port, "/v2/enqueue", body))
            accepted += status == 202

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    seconds = time.perf_counter() - started
    return {
        "events": count,
        "accepted": accepted,
        "concurrency": concurrency,
        "client": "lean asyncio HTTP/1.1",
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds, 1),
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


async def raw_topic(bootstrap: str, count: int, keys: int = 1) -> dict[str, Any]:
    """Produce `count` Events v2 records to alerts.raw; time until all are normalized.

    With one key (how one producer of one integration writes) every record is on one
    partition, which one ingest worker reads; with `keys` keys they spread over the
    partitions, which the workers share."""
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
        key = KEY if keys == 1 else f"{KEY}-{n % keys}"
        await producer.send(
            "alerts.raw", body, key=key.encode(), headers=[("tocsin-format", b"events_v2")]
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
        "keys": keys,
        "normalized": seen,
        "seconds": round(seconds, 2),
        "events_per_s": round(seen / seconds, 1),
    }


async def _measured(pid: int, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A phase's result plus the service's CPU time per event: steadier than events/s when
    the machine is shared."""
    before = tree_cpu_seconds(pid)
    result = await run
    spent = tree_cpu_seconds(pid) - before
    result["service_cpu_us_per_event"] = round(1e6 * spent / max(1, result["events"]), 1)
    return result


async def one_run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Start alert-ingest with `workers` processes, measure every path once, stop it."""
    bootstrap, redis_url = infra_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-ingest-"))
    config = workdir / "tocsin.yaml"
    config.write_text(json.dumps(CONFIG))
    grpc_port, http_port = free_port(), free_port()
    metrics_port = free_port()
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": bootstrap,
        "TOCSIN_REDIS_URL": redis_url,
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(metrics_port),
        "TOCSIN_HTTP_PORT": str(http_port),
        "TOCSIN_INGEST_WORKERS": str(workers),
        "OTEL_TRACES_EXPORTER": "none",
        "TOCSIN_LOG_LEVEL": "WARNING",
    }
    ingest = ServiceProcess(
        "alert-ingest", "tocsin_ingest", env, workdir / "ingest.log", grpc_port, http_port
    )
    ingest.start()
    try:
        await ingest.wait_healthy()
        assert ingest.proc is not None
        pid = ingest.proc.pid
        url = f"http://127.0.0.1:{http_port}"
        await single_events_lean(url, 500, args.concurrency)  # warm up the code paths
        result: dict[str, Any] = {"workers": workers}
        result["single_event_http"] = await _measured(
            pid, single_events_lean(url, args.events * 2, args.concurrency)
        )
        if args.aiohttp_client:
            result["single_event_http_aiohttp_client"] = await _measured(
                pid, single_events(url, args.events, args.concurrency)
            )
        result["alertmanager_batched"] = await _measured(
            pid, batched(url, args.events * 4, args.batch, 8)
        )
        result["kafka_alerts_raw"] = await _measured(pid, raw_topic(bootstrap, args.events * 2))
        result["kafka_alerts_raw_many_keys"] = await _measured(
            pid, raw_topic(bootstrap, args.events * 2, keys=RAW_KEYS)
        )
        return result
    finally:
        ingest.kill()


PATHS = (
    "single_event_http",
    "single_event_http_aiohttp_client",
    "alertmanager_batched",
    "kafka_alerts_raw",
    "kafka_alerts_raw_many_keys",
)
RAW_KEYS = 48  # record keys of the many-keys alerts.raw phase: every partition has some


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """`--rounds` rounds over the worker counts, alternating their order; medians."""
    counts = [int(n) for n in args.workers.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for round_ in range(args.rounds):
        for workers in counts if round_ % 2 == 0 else counts[::-1]:
            runs[workers].append(await one_run(args, workers))
    by_workers = []
    for workers, results in runs.items():
        summary: dict[str, Any] = {"workers": workers}
        for path in PATHS:
            samples = [r[path] for r in results if path in r]
            if not samples:
                continue
            summary[path] = {
                **{k: v for k, v in samples[0].items() if k not in _MEASURES},
                "events_per_s": statistics.median(s["events_per_s"] for s in samples),
                "service_cpu_us_per_event": statistics.median(
                    s["service_cpu_us_per_event"] for s in samples
                ),
                "events_per_s_runs": [s["events_per_s"] for s in samples],
            }
        by_workers.append(summary)
    return {
        "bench": "alert-ingest",
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "targets_events_per_s": {
            "single_event_http": 2000,
            "alertmanager_batched": 5000,
            "kafka_alerts_raw": 5000,
            "kafka_alerts_raw_many_keys": 5000,
        },
        "note": "medians over the rounds; events_per_s counts only events answered 202 "
        "(or normalized), i.e. durable on Kafka; service_cpu_us_per_event is alert-ingest's "
        "CPU time (all workers) per event",
        "by_workers": by_workers,
    }


_MEASURES = ("events_per_s", "service_cpu_us_per_event", "seconds", "accepted", "normalized")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--workers", default="1,2", help="TOCSIN_INGEST_WORKERS values to run, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each worker count")
    parser.add_argument(
        "--no-aiohttp-client",
        dest="aiohttp_client",
        action="store_false",
        help="skip the single-event run with the former (aiohttp) client",
    )
    add_out_argument(parser)
    args = parser.parse_args()
    report(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
