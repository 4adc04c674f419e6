"""The REST API under load, on the real services (the integration harness's stack):

1. list: 100,000 incidents in escalation's read side (written by the projection's own
   code, as escalation applies events), then ``GET /api/v1/incidents?limit=50`` one after
   another; latency p50/p99 (target: p99 <= 50 ms), beside the same page over gRPC
   (the api's own cost is the difference).
2. ack -> SSE: real incidents (alerts through ingest), one SSE stream open, acknowledgements
   sent through the API at a steady rate (50/s); for each, the time from sending the POST
   to its ``acknowledged`` event arriving on the stream (target: p99 <= 200 ms).

    TOCSIN_KAFKA_BOOTSTRAP=... TOCSIN_REDIS_URL=... python -m bench.api_bench \
        [--incidents 100000] [--requests 500] [--acks 500] [--rate 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from redis.asyncio import Redis
from tocsin.v1 import incident_pb2, incident_service_pb2, incident_service_pb2_grpc

from bench.results_io import add_out_argument, report
from tests.integration.harness import ROOT, Stack, infra_from_env

sys.path.insert(0, str(ROOT / "services" / "escalation"))
from tocsin_escalation.projection import IncidentProjection

KEY = "benchapi000000000000000000000001"
SEED_SERVICE = "bench-seeded"


def config() -> str:
    policy = {
        "id": "bench-policy",
        "name": "Bench",
        "levels": [{"delay": "1h", "targets": [{"type": "user", "id": "bench-user"}]}],
    }
    return yaml.safe_dump(
        {
            "version": 1,
            "services": [
                {
                    "id": "bench-svc",
                    "name": "Bench",
                    "team": "bench",
                    "escalation_policy": "bench-policy",
                    "integrations": [{"key": KEY, "type": "any"}],
                    "grouping": {"mode": "none"},
                },
                {
                    "id": SEED_SERVICE,
                    "name": "Seeded",
                    "team": "bench",
                    "escalation_policy": "bench-policy",
                },
            ],
            "teams": [{"id": "bench", "name": "Bench", "members": ["bench-user"]}],
            "users": [{"id": "bench-user", "name": "Bench", "email": "bench@example.com"}],
            "escalation_policies": [policy],
            "limits": {"watch_backlog": 200_000},
        }
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


async def seed(redis_url: str, count: int) -> float:
    """``count`` triggered incidents written by the projection's own apply (escalation's
    code), spread over the last 30 days; seconds it took."""
    redis = Redis.from_url(redis_url)
    projection = IncidentProjection(redis)
    started = time.perf_counter()
    now = time.time()
    try:
        for first in range(0, count, 2000):
            pipe = redis.pipeline(transaction=False)
            for n in range(first, min(count, first + 2000)):
                incident = incident_pb2.Incident(
                    incident_id=f"seed-{n:06d}",
                    service_id=SEED_SERVICE,
                    title=f"seeded incident {n}",
                    status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
                    urgency=incident_pb2.URGENCY_HIGH if n % 3 else incident_pb2.URGENCY_LOW,
                    alert_count=1,
                    open_alert_count=1,
                    escalation_policy_id="bench-policy",
                )
                incident.created_at.FromNanoseconds(int((now - 30 * 86400 * (1 - n / count)) * 1e9))
                incident.updated_at.CopyFrom(incident.created_at)
                event = incident_pb2.IncidentEvent(
                    event_id=f"seed-event-{n}",
                    type=incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED,
                    incident=incident,
                    actor="bench",
                    at=incident.created_at,
                )
                projection.queue_apply(pipe, event)
            await pipe.execute()
    finally:
        await redis.aclose()
    return time.perf_counter() - started


async def list_latency(stack: Stack, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", headers=headers) as http:
        cases: dict[str, dict[str, Any]] = {
            "first_page": {"limit": 50},
            "first_page_service_and_status": {
                "limit": 50,
                "service_id": SEED_SERVICE,
                "status": "triggered",
            },
        }
        for name, params in cases.items():
            for _ in range(20):  # warm-up
                (await http.get("/incidents", params=params)).raise_for_status()
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                reply = await http.get("/incidents", params=params)
                times.append((time.perf_counter() - began) * 1000)
                assert reply.status_code == 200 and len(reply.json()["incidents"]) == 50
            out[name] = summary(times)
        # A page deep into the list, through the cursor.
        cursor = None
        for _ in range(100):
            deep: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            cursor = (await http.get("/incidents", params=deep)).json()["next_cursor"]
        times = []
        for _ in range(min(requests, 200)):
            began = time.perf_counter()
            reply = await http.get("/incidents", params={"limit": 50, "cursor": cursor})
            times.append((time.perf_counter() - began) * 1000)
            assert reply.status_code == 200
        out["page_100_by_cursor"] = summary(times)
    # The same first page over gRPC, straight to escalation: the api's overhead is the rest.
    async with stack.channel("escalation") as channel:
        stub = incident_service_pb2_grpc.IncidentServiceStub(channel)
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            await stub.List(incident_service_pb2.ListIncidentsRequest(limit=50))
            times.append((time.perf_counter() - began) * 1000)
        out["grpc_first_page_direct"] = summary(times)
        times = []
        filtered = incident_service_pb2.ListIncidentsRequest(
            limit=50,
            service_ids=[SEED_SERVICE],
            statuses=[incident_pb2.INCIDENT_STATUS_TRIGGERED],
        )
        for _ in range(requests):
            began = time.perf_counter()
            await stub.List(filtered)
            times.append((time.perf_counter() - began) * 1000)
        out["grpc_service_and_status_direct"] = summary(times)
    return out


async def ack_to_stream(stack: Stack, acks: int, rate: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    titles = [f"bench ack {uuid.uuid4().hex[:10]}" for _ in range(acks)]
    async with httpx.AsyncClient(timeout=30) as http:
        for first in range(0, acks, 50):
            await asyncio.gather(
                *(
                    http.post(
                        f"{stack.ingest_url}/v2/enqueue",
                        json={
                            "routing_key": KEY,
                            "event_action": "trigger",
                            "dedup_key": t,
                            "payload": {"summary": t, "source": "bench", "severity": "critical"},
                        },
                    )
                    for t in titles[first : first + 50]
                )
            )
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=f"{stack.api_url}/api/v1", headers=headers, timeout=30
    ) as api:
        deadline = time.monotonic() + 120
        while len(ids) < acks:
            cursor = None
            while True:
                params: dict[str, Any] = {"service_id": "bench-svc", "limit": 100}
                if cursor:
                    params["cursor"] = cursor
                page = (await api.get("/incidents", params=params)).json()
                ids.update({i["title"]: i["id"] for i in page["incidents"] if i["title"] in titles})
                cursor = page["next_cursor"]
                if not cursor:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(ids)} of {acks} incidents appeared")
            await asyncio.sleep(0.5)

        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        accepted: list[float] = []
        done = asyncio.Event()

        async def listen() -> None:
            async with api.stream(
                "GET", "/incidents/stream", params={"service_id": "bench-svc"}, timeout=None
            ) as stream:
                buffer = ""
                ready.set()
                async for chunk in stream.aiter_text():
                    buffer += chunk
                    while "\n\n" in buffer:
                        block, buffer = buffer.split("\n\n", 1)
                        for line in block.split("\n"):
                            if not line.startswith("data: "):
                                continue
                            data = json.loads(line[6:])
                            if data["type"] == "acknowledged":
                                iid = data["incident"]["id"]
                                if iid in sent and iid not in seen:
                                    seen[iid] = time.perf_counter()
                                    if len(seen) == len(ids):
                                        done.set()
                                        return

        ready = asyncio.Event()
        listener = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(0.5)

        async def ack(incident_id: str) -> None:
            sent[incident_id] = began = time.perf_counter()
            reply = await api.post(f"/incidents/{incident_id}/acknowledge")
            accepted.append((time.perf_counter() - began) * 1000)
            assert reply.status_code == 202, reply.text

        started = time.perf_counter()
        tasks = []
        for n, incident_id in enumerate(ids.values()):
            due = started + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(ack(incident_id)))
        await asyncio.gather(*tasks)
        sending_s = time.perf_counter() - started
        try:
            await asyncio.wait_for(done.wait(), 60)
        finally:
            listener.cancel()
    visible = [(seen[i] - sent[i]) * 1000 for i in seen]
    return {
        "acks": len(sent),
        "rate_per_s": rate,
        "achieved_rate_per_s": round(len(sent) / sending_s, 1),
        "seen_on_stream": len(seen),
        "ack_to_stream": summary(visible),
        "ack_accepted_202": summary(accepted),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--acks", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    add_out_argument(parser)
    args = parser.parse_args()
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    seed_s = await seed(redis_url, args.incidents)
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(bootstrap, redis_url, Path(workdir), config())
        stack.extra_env = {"OTEL_TRACES_EXPORTER": "none", "TOCSIN_LOG_LEVEL": "WARNING"}
        await stack.start()
        try:
            listing = await list_latency(stack, args.requests)
            acking = await ack_to_stream(stack, args.acks, args.rate)
        finally:
            await stack.stop()
    result = {
        "bench": "api",
        # Other work on the machine skews every number: the 1-minute load when it ended.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "incidents": args.incidents,
        "seed_seconds": round(seed_s, 1),
        "list_50": listing,
        "ack_visible_on_sse": acking,
        "targets": {"list_50_p99_ms": 50, "ack_to_stream_p99_ms": 200},
        "met": {
            "list_50": listing["first_page"]["p99_ms"] <= 50,
            "ack_to_stream": acking["ack_to_stream"]["p99_ms"] <= 200,
        },
    }
    report(result, args.out)


if __name__ == "__main__":
    asyncio.run(main())
