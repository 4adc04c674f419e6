"""The whole pipeline under load, side by side with Prometheus Alertmanager 0.25.

    python bench/pipeline_bench.py --rates 50,100,200 --seconds 10 --max-events 3000

After a warm-up that is not measured (300 alerts at 100/s to each), for each fixed rate,
and then as fast as the sender can go ("max"), the same load is sent
to Tocsin (POST /v2/enqueue, one alert each, through ingest → correlation → escalation →
notification → webhook) and to Alertmanager (POST /api/v2/alerts, one alert each, grouping
off, group_wait 0s → webhook). A page / notification is matched to its alert by a unique
key, so latency is measured per alert from the sender's accepted answer to the webhook's
receipt. Reports JSON (and a PNG chart with --chart) with, per system and rate:
events accepted/s, pages or notifications/s, latency p50/p99/max, lost (never delivered)
and duplicated deliveries; for Tocsin also incidents/s and memory per open incident.

Runs against the Kafka and Redis of TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL (`make bench`
starts a stack of its own on the bench profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.alertmanager import Alertmanager, version
from bench.procstat import cpu_seconds, group_cpu_seconds, infra_process_groups, rss_bytes
from tests.integration.harness import Stack, free_port, infra_from_env

TEAMS = 24  # services, each with its own on-call person: load spreads over partitions


def routing_key(team: int) -> str:
    return f"benchteam{team:023d}"


def bench_config(peer: str) -> str:
    """One service per team, grouping off (one incident per alert, as Alertmanager is
    configured), each paging its own on-call person's webhook at once."""
    services, users, policies = [], [], []
    for team in range(TEAMS):
        services.append(
            {
                "id": f"svc{team}",
                "name": f"Service {team}",
                "escalation_policy": f"policy{team}",
                "integrations": [
                    {
                        "key": routing_key(team),
                        "type": "any",
                        "name": "bench",
                        "rate_limit_per_minute": 1_000_000,
                    }
                ],
                "grouping": {"mode": "none"},
            }
        )
        users.append(
            {
                "id": f"user{team}",
                "name": f"User {team}",
                "email": f"user{team}@example.com",
                "contact_methods": [{"id": "hook", "type": "webhook", "address": f"{peer}/tocsin"}],
                "notification_rules": {
                    "high": [{"delay": "0m", "contact_method": "hook"}],
                    "low": [{"delay": "0m", "contact_method": "hook"}],
                },
            }
        )
        policies.append(
            {
                "id": f"policy{team}",
                "name": f"Policy {team}",
                "levels": [{"delay": "30m", "targets": [{"type": "user", "id": f"user{team}"}]}],
            }
        )
    return json.dumps(
        {
            "version": 1,
            "services": services,
            "users": users,
            "escalation_policies": policies,
            # The receiving peer is on 127.0.0.1, refused unless allow-listed.
            "notification": {"outgoing": {"allow": ["127.0.0.1"]}},
        }
    )  # JSON is YAML


@dataclass
class TimingPeer:
    """A webhook receiver that notes when each alert's key arrived (first and repeats)."""

    port: int
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/tocsin", self._tocsin)
        app.router.add_post("/alertmanager", self._alertmanager)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=4096).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _note(self, key: str) -> None:
        self.arrivals.setdefault(key, []).append(time.monotonic())

    async def _tocsin(self, request: web.Request) -> web.Response:
        body = await request.json()
        # A bundled message lists several incidents; each of them was paged.
        for incident in body.get("incidents") or [body["incident"]]:
            self._note(incident["title"].rsplit(" ", 1)[-1])
        return web.json_response({"ok": True})

    async def _alertmanager(self, request: web.Request) -> web.Response:
        body = await request.json()
        for alert in body.get("alerts", []):
            self._note(alert["labels"]["key"])
        return web.json_response({"ok": True})


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def send_load(
    session: aiohttp.ClientSession,
    make_request: Any,
    count: int,
    rate: float | None,
    concurrency: int,
) -> tuple[dict[str, float], float, int]:
    """Send `count` alerts at `rate`/s (None: as fast as possible); return accepted time per
    key, the sending duration, and the number refused."""
    accepted: dict[str, float] = {}
    refused = 0
    semaphore = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(i: int) -> None:
        nonlocal refused
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        key = f"k{uuid.uuid4().hex[:16]}"
        async with semaphore:
            url, payload = make_request(key)
            async with session.post(url, json=payload) as response:
                await response.read()
                if response.status in (200, 202):
                    accepted[key] = time.monotonic()
                else:
                    refused += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return accepted, time.monotonic() - started, refused


async def wait_delivered(peer: TimingPeer, keys: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if keys <= peer.arrivals.keys():
            return
        await asyncio.sleep(0.2)


def summarize(
    name: str,
    rate: float | None,
    accepted: dict[str, float],
    send_seconds: float,
    refused: int,
    peer: TimingPeer,
) -> dict[str, Any]:
    delivered = {k: peer.arrivals[k] for k in accepted if k in peer.arrivals}
    latencies = [(times[0] - accepted[k]) * 1000 for k, times in delivered.items()]
    last = max((times[0] for times in delivered.values()), default=time.monotonic())
    first_accept = min(accepted.values(), default=last)
    span = max(last - first_accept, 1e-9)
    return {
        "system": name,
        "rate": rate if rate is not None else "max",
        "sent": len(accepted) + refused,
        "accepted": len(accepted),
        "refused": refused,
        "accepted_per_s": round(len(accepted) / send_seconds, 1) if send_seconds else None,
        "delivered": len(delivered),
        "delivered_per_s": round(len(delivered) / span, 1),
        "lost": len(accepted) - len(delivered),
        "duplicated": sum(1 for t in delivered.values() if len(t) > 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(max(latencies, default=float("nan")), 1),
        },
    }


def cpu_of(pid: int, group: bool) -> float:
    return group_cpu_seconds(pid) if group else cpu_seconds(pid)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    peer = TimingPeer(free_port())
    await peer.start()
    peer_url = f"http://127.0.0.1:{peer.port}"
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-"))
    stack = Stack(
        bootstrap,
        redis_url,
        workdir,
        bench_config(peer_url),
        extra_env={
            "OTEL_TRACES_EXPORTER": "none",
            "TOCSIN_LOG_LEVEL": "WARNING",
            # Like Alertmanager here (grouping off): one message per page, no per-person
            # rate limit or bundling window.
            "TOCSIN_NOTIFY_BUNDLE_WINDOW_S": "0",
            "TOCSIN_NOTIFY_RATE_LIMIT": "1000000",
        },
    )
    await stack.start()
    alertmanager = Alertmanager(free_port(), f"{peer_url}/alertmanager")
    alertmanager.start()

    def tocsin_request(key: str) -> tuple[str, dict[str, Any]]:
        team = int(key[1:], 16) % TEAMS
        return f"{stack.ingest_url}/v2/enqueue", {
            "routing_key": routing_key(team),
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {"summary": f"bench alert {key}", "source": "bench", "severity": "critical"},
        }

    def alertmanager_request(key: str) -> tuple[str, list[dict[str, Any]]]:
        return f"{alertmanager.url}/api/v2/alerts", [
            {
                "labels": {"alertname": "BenchAlert", "key": key, "severity": "critical"},
                "annotations": {"summary": f"bench alert {key}"},
            }
        ]

    runs: list[dict[str, Any]] = []
    plan: list[tuple[float | None, int]] = [(r, int(r * args.seconds)) for r in args.rates]
    plan.append((None, args.max_events))
    pids = {n: s.proc.pid for n, s in stack.services.items() if s.proc}
    infra = infra_process_groups()
    total_tocsin = 0
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.concurrency)
        ) as session:
            # Not measured: a fresh broker's JIT compilation and every client's first
            # connections would otherwise land on the first rate's figures.
            for make in (tocsin_request, alertmanager_request):
                warm, _, _ = await send_load(session, make, args.warmup, 100.0, args.concurrency)
                await wait_delivered(peer, set(warm), args.drain_seconds)
            memory_before = {n: rss_bytes(p) for n, p in pids.items()}
            redis_before = int((await redis.info("memory"))["used_memory"])
            am_before = alertmanager.rss_bytes()
            for rate, count in plan:
                for name, make in (
                    ("tocsin", tocsin_request),
                    ("alertmanager", alertmanager_request),
                ):
                    measured = (
                        {
                            **{n: (p, False) for n, p in pids.items()},
                            **{n: (g, True) for n, g in infra.items()},
                        }
                        if name == "tocsin"
                        else {"alertmanager": (alertmanager.pid or 0, False)}
                    )
                    cpu_before = {n: cpu_of(*what) for n, what in measured.items()}
                    accepted, seconds, refused = await send_load(
                        session, make, count, rate, args.concurrency
                    )
                    await wait_delivered(peer, set(accepted), args.drain_seconds)
                    result = summarize(name, rate, accepted, seconds, refused, peer)
                    # CPU per delivered page, per process: a throughput figure that depends
                    # less on what else the machine is doing.
                    pages = max(result["delivered"], 1)
                    result["cpu_ms_per_page"] = {
                        n: round((cpu_of(*what) - cpu_before[n]) * 1000 / pages, 2)
                        for n, what in measured.items()
                    }
                    if name == "tocsin":
                        total_tocsin += len(accepted)
                    runs.append(result)
                    print(json.dumps(result), flush=True)
        memory_after = {n: rss_bytes(p) for n, p in pids.items()}
        redis_after = int((await redis.info("memory"))["used_memory"])
        open_incidents = total_tocsin  # grouping off, nothing resolved: one open incident each
        state_bytes = sum(memory_after[n] - memory_before[n] for n in ("correlation", "escalation"))
        memory = {
            "open_incidents": open_incidents,
            "bytes_per_open_incident": {
                "redis": round((redis_after - redis_before) / max(open_incidents, 1)),
                "services_rss": round(state_bytes / max(open_incidents, 1)),
            },
            "alertmanager_rss_growth_per_alert": round(
                (alertmanager.rss_bytes() - am_before) / max(open_incidents, 1)
            ),
        }
    finally:
        alertmanager.stop()
        await stack.stop()
        await peer.stop()
        await redis.aclose()

    ratios = []
    for rate, _ in plan:
        label = rate if rate is not None else "max"
        t = next(r for r in runs if r["system"] == "tocsin" and r["rate"] == label)
        a = next(r for r in runs if r["system"] == "alertmanager" and r["rate"] == label)
        ratios.append(
            {
                "rate": label,
                "pages_per_s_ratio": round(
                    t["delivered_per_s"] / max(a["delivered_per_s"], 1e-9), 2
                ),
                "p99_ratio": round(t["latency_ms"]["p99"] / max(a["latency_ms"]["p99"], 1e-9), 2),
            }
        )
    return {
        "bench": "pipeline",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "alertmanager": version(),
            "tracing": "off (OTEL_TRACES_EXPORTER=none)",
            "tocsin_delivery": "bundling and per-person rate limit off, as Alertmanager's grouping",
        },
        "runs": runs,
        "ratios_tocsin_over_alertmanager": ratios,
        "memory": memory,
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r["rate"]) for r in result["runs"] if r["system"] == "tocsin"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for system, colour in (("tocsin", "tab:red"), ("alertmanager", "tab:blue")):
        rows = [r for r in result["runs"] if r["system"] == system]
        left.plot(labels, [r["delivered_per_s"] for r in rows], "o-", color=colour, label=system)
        right.plot(
            labels,
            [r["latency_ms"]["p99"] for r in rows],
            "o-",
            color=colour,
            label=f"{system} p99",
        )
        right.plot(
            labels,
            [r["latency_ms"]["p50"] for r in rows],
            "o--",
            color=colour,
            label=f"{system} p50",
        )
    left.set(title="pages (notifications) per second", xlabel="offered rate (alerts/s)")
    right.set(
        title="accepted → delivered latency (ms)", xlabel="offered rate (alerts/s)", yscale="log"
    )
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rates", default="50,100,200")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--drain-seconds", type=float, default=60)
    parser.add_argument(
        "--warmup", type=int, default=300, help="alerts sent to each system first, unmeasured"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        chart(result, args.chart)
    print(
        json.dumps(
            {"ratios": result["ratios_tocsin_over_alertmanager"], "memory": result["memory"]}
        )
    )


if __name__ == "__main__":
    main()
