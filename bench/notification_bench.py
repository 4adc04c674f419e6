"""Notification throughput and latency: N NotificationRequests straight onto
notifications.requests, delivered by the real services to a local webhook peer.

    eval "$(python tools/devstack.py env --profile h2)"
    python -m bench.notification_bench --pages 5000

Each request goes to a different user (so bundling and rate limits do not merge pages);
prints JSON: pages/s delivered and p50/p99 of request -> delivered (peer receive time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer
from tocsin.v1 import incident_pb2, notification_pb2

from bench.results_io import add_out_argument, report
from tests.integration.harness import Stack, infra_from_env


def config(users: int) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "users": [
                {
                    "id": f"bench-{n}",
                    "name": f"Bench {n}",
                    "email": f"bench{n}@example.com",
                    "contact_methods": [
                        {"id": "hook", "type": "webhook", "address": f"{{peer}}/pages/{n}"}
                    ],
                }
                for n in range(users)
            ],
        }
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(pages: int) -> dict[str, object]:
    bootstrap, redis_url = infra_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-notification-bench-"))
    stack = Stack(bootstrap, redis_url, workdir, config(pages))
    try:
        await stack.start()
    except BaseException:
        print(stack.logs())
        await stack.stop()
        raise
    arrived: dict[str, float] = {}
    original = stack.pages._handle

    async def timed(request):  # type: ignore[no-untyped-def]
        response = await original(request)
        body = json.loads(stack.pages.requests[-1].body)
        arrived[body["idempotency_key"]] = time.perf_counter()
        return response

    stack.pages._handle = timed  # type: ignore[method-assign]
    # aiohttp bound the old handler at start; re-route through a small shim.
    assert stack.pages._runner is not None
    app = stack.pages._runner.app
    for route in app.router.routes():
        route._handler = timed  # type: ignore[attr-defined]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    run_id = uuid.uuid4().hex[:8]
    try:
        started = time.perf_counter()
        futures = []
        for n in range(pages):
            incident_id = f"bench-{run_id}-{n}"
            key = f"{incident_id}:1:0:bench-{n}:0"
            request = notification_pb2.NotificationRequest(
                request_id=key,
                idempotency_key=key,
                user_id=f"bench-{n}",
                contact_method_id="hook",
                incident=incident_pb2.Incident(
                    incident_id=incident_id, service_id="bench", title=f"bench {n}"
                ),
            )
            sent[key] = time.perf_counter()
            futures.append(
                await producer.send(
                    "notifications.requests", request.SerializeToString(), key=f"bench-{n}".encode()
                )
            )
        await asyncio.gather(*futures)
        produced = time.perf_counter()
        deadline = time.monotonic() + 300
        while len(arrived) < pages and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        finished = max(arrived.values()) if arrived else time.perf_counter()
        latencies = [(arrived[k] - sent[k]) * 1000 for k in arrived if k in sent]
        return {
            "pages": pages,
            "delivered": len(arrived),
            "produce_seconds": round(produced - started, 3),
            "seconds": round(finished - started, 3),
            "pages_per_second": round(len(arrived) / (finished - started), 1),
            "latency_ms_p50": round(percentile(latencies, 50), 1) if latencies else None,
            "latency_ms_p99": round(percentile(latencies, 99), 1) if latencies else None,
        }
    finally:
        await producer.stop()
        await stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=5000)
    add_out_argument(parser)
    args = parser.parse_args()
    report(asyncio.run(run(args.pages)), args.out)


if __name__ == "__main__":
    main()
