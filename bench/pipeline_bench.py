"""The whole pipeline under load, side by side with Prometheus Alertmanager 0.25.

    python bench/pipeline_bench.py --rates 50,100,200 --seconds 10 --max-events 3000 --reps 3

The same load goes to Tocsin (POST /v2/enqueue, one alert each, through ingest →
correlation → escalation → notification → webhook) and to Alertmanager (POST
/api/v2/alerts, one alert each, grouping off, group_wait 0s → webhook). A page is matched
to its alert by a unique key, so latency is measured per alert from the sender's accepted
answer to the webhook's receipt.

1. **Warm-up until steady** (not measured): Tocsin at --warmup-rate in windows of
   --warmup-window seconds until at least --warmup-min-seconds of load have run and the
   broker's CPU per page has stopped falling (the last windows within a tolerance of their
   median; bench/pipeline_stats.py SteadyCriterion, recorded in the JSON with every
   window's figure). A fresh broker's JIT compiles for about a minute; before this warm-up
   the first rates measured mostly that. Alertmanager gets a short warm-up too.
2. **Repetitions** (--reps, at least 3): each rate of --rates for --seconds, then
   --max-events as fast as the sender goes ("max"), Tocsin and Alertmanager alternating
   phase by phase (which goes first alternates between repetitions, so drift does not
   favour one). Each phase reports pages/s, latency, lost and duplicated pages, CPU per
   page per process (every Tocsin process, the broker, Redis, PostgreSQL, the load
   generator with its webhook peer) and totals; for Tocsin also Kafka records per alert
   (end-offset deltas over every topic, faust's changelogs and __consumer_offsets apart),
   broker requests per alert (the broker's own RequestMetrics over JMX,
   bench/broker_requests.py) and the time per hop (accepted → alerts.normalized →
   incidents.events → notifications.requests → page, from the records' create times).
   The JSON's "phases" give per phase the median over repetitions and the spread
   ((max - min) / median, the machine's drift); "runs" keeps every repetition.
3. **Scale-out**: a second process of alert-ingest, correlation, escalation and
   notification joins (ingest's load split over both), and --two-worker-rates run again
   --reps times; "scale_out" sets their CPU per page beside one worker's.

4. **Before/after** (--baseline GIT_REV): the services of that revision (libs/common and
   services/ from git, first on PYTHONPATH) take turns with the working tree's on the same
   warm broker, a stack each, every repetition (which goes first alternates; Alertmanager
   runs between them); "baseline" in the JSON sets the medians side by side. Both share
   the consumer groups, topics and correlation's changelogs: they must agree on topic
   partitions (a revision before TOCSIN_KAFKA_PARTITIONS has 12: run with
   TOCSIN_KAFKA_PARTITIONS=12 on a stack created so) and on table formats.

Runs against the Kafka, Redis and PostgreSQL of the devstack profile in the environment
(`make bench` starts a stack of its own on the bench profile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common.kafka import client_options
from tocsin_common.topics import ALERTS_NORMALIZED, INCIDENTS_EVENTS, NOTIFICATIONS_REQUESTS

from bench.alertmanager import Alertmanager, version
from bench.broker_requests import BrokerRequests, BrokerRequestsUnavailable
from bench.kafka_counts import TopicCounter, partitions, split_internal
from bench.pipeline_stats import (
    SteadyCriterion,
    counter_delta,
    hop_breakdown,
    is_steady,
    per_alert,
    percentile,
    summarize_repetitions,
    warmup_done,
)
from bench.procstat import (
    family_cpu_seconds,
    group_cpu_seconds,
    infra_process_groups,
    own_cpu_seconds,
    rss_bytes,
    tree_cpu_seconds,
)
from tests.integration.harness import Stack, free_port, infra_from_env

TEAMS = 24  # services, each with its own on-call person: load spreads over partitions
SCALED = ("alert-ingest", "correlation", "escalation", "notification")
INFRA = ("kafka", "redis", "postgres")


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
    """A webhook receiver that notes when each alert's key arrived (first and repeats),
    by the wall clock (Kafka's record times are wall-clock too)."""

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
        self.arrivals.setdefault(key, []).append(time.time())

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


@dataclass
class Sent:
    """One phase's load: when each accepted alert was sent and accepted (wall clock)."""

    sent: dict[str, float]
    accepted: dict[str, float]
    seconds: float
    refused: int


MakeRequest = Callable[[str, int], tuple[str, Any]]


async def send_load(
    session: aiohttp.ClientSession,
    make_request: MakeRequest,
    count: int,
    rate: float | None,
    concurrency: int,
) -> Sent:
    """Send `count` alerts at `rate`/s (None: as fast as possible)."""
    sent: dict[str, float] = {}
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
            url, payload = make_request(key, i)
            at = time.time()
            async with session.post(url, json=payload) as response:
                await response.read()
                if response.status in (200, 202):
                    sent[key] = at
                    accepted[key] = time.time()
                else:
                    refused += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return Sent(sent, accepted, time.monotonic() - started, refused)


async def wait_delivered(peer: TimingPeer, keys: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if keys <= peer.arrivals.keys():
            return
        await asyncio.sleep(0.1)


def delivery_summary(rate: float | None, load: Sent, peer: TimingPeer) -> dict[str, Any]:
    delivered = {k: peer.arrivals[k] for k in load.accepted if k in peer.arrivals}
    latencies = [(times[0] - load.accepted[k]) * 1000 for k, times in delivered.items()]
    last = max((times[0] for times in delivered.values()), default=time.time())
    first_accept = min(load.accepted.values(), default=last)
    span = max(last - first_accept, 1e-9)
    return {
        "rate": rate if rate is not None else "max",
        "sent": len(load.accepted) + load.refused,
        "accepted": len(load.accepted),
        "refused": load.refused,
        "accepted_per_s": round(len(load.accepted) / load.seconds, 1) if load.seconds else None,
        "delivered": len(delivered),
        "delivered_per_s": round(len(delivered) / span, 1),
        "lost": len(load.accepted) - len(delivered),
        "duplicated": sum(1 for t in delivered.values() if len(t) > 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(max(latencies, default=float("nan")), 1),
        },
    }


class HopReader:
    """Reads a phase's alerts.normalized, incidents.events and notifications.requests
    records afterwards (outside the measured window) for their create times."""

    TOPICS = (ALERTS_NORMALIZED.name, INCIDENTS_EVENTS.name, NOTIFICATIONS_REQUESTS.name)

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._start: dict[TopicPartition, int] = {}

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="tocsin-bench-hops",
            enable_auto_commit=False,
            **client_options(),
        )

    async def _ends(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **client_options())
        await admin.start()
        try:
            tps = await partitions(admin, self.TOPICS)
        finally:
            await admin.close()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends

    async def mark(self) -> None:
        consumer = self._consumer()
        await consumer.start()
        try:
            self._start = await self._ends(consumer)
        finally:
            await consumer.stop()

    async def moments(self, load: Sent, peer: TimingPeer) -> dict[str, dict[str, float]]:
        """Per accepted alert of the phase: sent, accepted, page, and the create times of its
        first alerts.normalized, incidents.events (triggered) and notifications.requests
        records."""
        consumer = self._consumer()
        await consumer.start()
        normalized: dict[str, float] = {}
        triggered: dict[str, tuple[str, float]] = {}  # incident id -> (key, time)
        requested: dict[str, float] = {}  # incident id -> time
        try:
            ends = await self._ends(consumer)
            todo = {tp: end for tp, end in ends.items() if end > self._start.get(tp, 0)}
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, self._start.get(tp, 0))
            while todo:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                if not batches:
                    break
                for tp, records in batches.items():
                    for record in records:
                        at = record.timestamp / 1000
                        if tp.topic == ALERTS_NORMALIZED.name:
                            alert = alert_pb2.Alert.FromString(record.value)
                            normalized.setdefault(alert.dedup_key, at)
                        elif tp.topic == INCIDENTS_EVENTS.name:
                            event = incident_pb2.IncidentEvent.FromString(record.value)
                            if event.type == incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED:
                                key = event.alert.dedup_key or next(
                                    iter(event.incident.dedup_keys), ""
                                )
                                triggered.setdefault(event.incident.incident_id, (key, at))
                        else:
                            request = notification_pb2.NotificationRequest.FromString(record.value)
                            requested.setdefault(request.incident.incident_id, at)
                    if records and records[-1].offset + 1 >= todo.get(tp, 0):
                        todo.pop(tp, None)
        finally:
            await consumer.stop()
        out: dict[str, dict[str, float]] = {}
        for key, accepted in load.accepted.items():
            m = {"sent": load.sent[key], "accepted": accepted}
            if key in normalized:
                m["normalized"] = normalized[key]
            if key in peer.arrivals:
                m["page"] = peer.arrivals[key][0]
            out[key] = m
        for incident_id, (key, at) in triggered.items():
            if key in out:
                out[key]["incident_event"] = at
                if incident_id in requested:
                    out[key]["notification_request"] = requested[incident_id]
        return out


@dataclass
class Probes:
    """What a phase reads of the broker besides CPU: records written and requests handled."""

    counter: TopicCounter
    requests: BrokerRequests | None
    hops: HopReader
    counts_calls: int = 0  # TopicCounter calls: each one is 2 requests of the bench's own

    async def topic_ends(self) -> dict[str, int]:
        self.counts_calls += 1
        return await self.counter.end_offsets()

    async def settle(self, quiet_s: float = 1.0, timeout_s: float = 15.0) -> dict[str, int]:
        """Wait until no topic but Kafka's internal ones grows for ``quiet_s`` (the records
        that follow a page: statuses, timeline entries, their events); the last count."""
        deadline = time.monotonic() + timeout_s
        last = split_internal(await self.topic_ends())[0]
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = split_internal(await self.topic_ends())[0]
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                break
        return await self.topic_ends()

    def request_snapshot(self) -> dict[str, int] | None:
        return self.requests.snapshot() if self.requests is not None else None


CpuSources = dict[str, Callable[[], float]]
CURRENT = "current"


def baseline_pythonpath(rev: str, workdir: Path) -> str:
    """libs/common and services/ as they were at git revision ``rev``, unpacked under
    workdir: first on PYTHONPATH, they replace the working tree's packages."""
    target = workdir / "baseline-code"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev, "libs/common", "services"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    dirs = [target / "libs" / "common", *sorted(p for p in (target / "services").iterdir())]
    return os.pathsep.join(str(d) for d in dirs if d.is_dir())


class StackHolder:
    """The running stack of one code variant (the working tree's, or a baseline
    revision's); `switch` stops it and starts the other's on the same broker, Redis and
    consumer groups (so the two must agree on topics, partitions and table formats)."""

    def __init__(
        self, bootstrap: str, redis_url: str, workdir: Path, config: str, code: dict[str, str]
    ) -> None:
        self.bootstrap, self.redis_url, self.workdir = bootstrap, redis_url, workdir
        self.config, self.code = config, code
        self.variant = ""
        self._stack: Stack | None = None
        self.ingest_urls: list[str] = []
        self.starts = 0

    @property
    def stack(self) -> Stack:
        assert self._stack is not None
        return self._stack

    async def switch(
        self,
        variant: str,
        session: aiohttp.ClientSession | None = None,
        make: MakeRequest | None = None,
        peer: TimingPeer | None = None,
    ) -> Stack:
        """The stack of ``variant``, started if another runs; after a switch, 10 s of load
        (not measured) while the consumer groups settle."""
        if self._stack is not None and self.variant == variant:
            return self._stack
        await self.stop()
        self.starts += 1
        extra = {
            "OTEL_TRACES_EXPORTER": "none",
            "TOCSIN_LOG_LEVEL": "WARNING",
            # Like Alertmanager here (grouping off): one message per page, no per-person
            # rate limit or bundling window.
            "TOCSIN_NOTIFY_BUNDLE_WINDOW_S": "0",
            "TOCSIN_NOTIFY_RATE_LIMIT": "1000000",
        }
        if self.code[variant]:
            inherited = os.environ.get("PYTHONPATH", "")
            extra["PYTHONPATH"] = os.pathsep.join(p for p in (self.code[variant], inherited) if p)
        workdir = self.workdir / f"stack-{self.starts}"
        workdir.mkdir()
        self._stack = Stack(self.bootstrap, self.redis_url, workdir, self.config, extra_env=extra)
        self.variant = variant
        await self._stack.start()
        self.ingest_urls[:] = [self._stack.ingest_url]
        if session is not None and make is not None and peer is not None:
            settle = await send_load(session, make, 1000, 100.0, 16)
            await wait_delivered(peer, set(settle.accepted), 60)
        return self._stack

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.stop()
            self._stack = None


def tocsin_cpu_sources(stack: Stack, infra: Mapping[str, int]) -> CpuSources:
    sources: CpuSources = {}
    for name, service in stack.services.items():
        if service.proc is not None:
            pid = service.proc.pid
            sources[name] = lambda pid=pid: tree_cpu_seconds(pid)  # type: ignore[misc]
    for name, pgid in infra.items():
        sources[name] = lambda pgid=pgid: family_cpu_seconds(pgid)  # type: ignore[misc]
    return sources


def cpu_totals(per_process: Mapping[str, float]) -> dict[str, float]:
    services = sum(v for n, v in per_process.items() if n not in (*INFRA, "load_generator"))
    return {
        "tocsin_services": round(services, 2),
        "tocsin_and_broker": round(services + per_process.get("kafka", 0.0), 2),
        "tocsin_and_infra": round(services + sum(per_process.get(n, 0.0) for n in INFRA), 2),
    }


async def run_phase(
    system: str,
    rate: float | None,
    count: int,
    workers: int,
    make: MakeRequest,
    session: aiohttp.ClientSession,
    peer: TimingPeer,
    cpu: CpuSources,
    probes: Probes | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One measured phase: load, delivery, then (Tocsin) the records that follow the pages."""
    if probes is not None:
        await probes.hops.mark()
        offsets_before = await probes.topic_ends()
        requests_before = probes.request_snapshot()
        calls_before = probes.counts_calls
    cpu_before = {n: read() for n, read in cpu.items()}
    own_before = own_cpu_seconds()
    load = await send_load(session, make, count, rate, args.concurrency)
    await wait_delivered(peer, set(load.accepted), args.drain_seconds)
    if probes is not None:
        offsets_after = await probes.settle()
    cpu_after = {n: read() for n, read in cpu.items()}
    own_after = own_cpu_seconds()
    result = {"system": system, "workers": workers, **delivery_summary(rate, load, peer)}
    pages = max(result["delivered"], 1)
    per_process = {n: (cpu_after[n] - cpu_before[n]) * 1000 / pages for n in cpu}
    per_process["load_generator"] = (own_after - own_before) * 1000 / pages
    result["cpu_ms_per_page"] = {
        **{n: round(v, 2) for n, v in per_process.items()},
        **(cpu_totals(per_process) if system == "tocsin" else {}),
    }
    if probes is not None:
        alerts = len(load.accepted)
        records, internal = split_internal(counter_delta(offsets_before, offsets_after))
        result["records_per_alert"] = per_alert(records, alerts)
        result["internal_records_per_alert"] = per_alert(internal, alerts)
        requests_after = probes.request_snapshot()
        if requests_before is not None and requests_after is not None:
            handled = counter_delta(requests_before, requests_after)
            # Less the bench's own counting requests.
            own = probes.counts_calls - calls_before
            for name, n in TopicCounter.REQUESTS_PER_COUNT.items():
                if name in handled:
                    handled[name] = max(0, handled[name] - n * own)
            result["broker_requests_per_alert"] = per_alert(handled, alerts)
        result["hops_ms"] = hop_breakdown(await probes.hops.moments(load, peer))
    print(json.dumps(result), flush=True)
    return result


async def warm_up(
    session: aiohttp.ClientSession,
    make: MakeRequest,
    peer: TimingPeer,
    broker_cpu: Callable[[], float],
    criterion: SteadyCriterion,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Tocsin under `rate` in windows until the broker's CPU per page is steady."""
    windows: list[float] = []
    seconds = 0.0
    started = time.monotonic()
    while not warmup_done(windows, seconds, criterion):
        before = broker_cpu()
        load = await send_load(
            session, make, int(rate * criterion.window_seconds), rate, args.concurrency
        )
        await wait_delivered(peer, set(load.accepted), args.drain_seconds)
        delivered = sum(1 for k in load.accepted if k in peer.arrivals)
        windows.append(round((broker_cpu() - before) * 1000 / max(delivered, 1), 2))
        seconds += load.seconds
        print(json.dumps({"warmup_s": round(seconds), "broker_cpu_ms_per_page": windows[-1]}))
    return {
        "criterion": criterion.describe(),
        "rate": rate,
        "load_seconds": round(seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "broker_cpu_ms_per_page_by_window": windows,
        "steady": is_steady(windows, seconds, criterion),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def phase_plan(args: argparse.Namespace, rates: list[float]) -> list[tuple[float | None, int]]:
    plan: list[tuple[float | None, int]] = [(r, int(r * args.seconds)) for r in rates]
    if args.max_events:
        plan.append((None, args.max_events))
    return plan


KEYS = ("system", "variant", "workers", "rate")


def summarize_phases(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        key = (run["system"], run["variant"], run["workers"], str(run["rate"]))
        groups.setdefault(key, []).append(run)
    return [
        {
            **{k: reps[0][k] for k in KEYS},
            **summarize_repetitions(
                [{k: v for k, v in r.items() if k not in (*KEYS, "rep")} for r in reps]
            ),
        }
        for reps in groups.values()
    ]


def find_phase(
    phases: list[dict[str, Any]],
    system: str,
    workers: int,
    rate: Any,
    variant: str = "current",
) -> Any:
    wanted = (system, variant, workers, rate)
    return next((p for p in phases if tuple(p[k] for k in KEYS) == wanted), None)


# What the baseline comparison sets side by side (paths into a phase's medians).
VERSUS = {
    "pages_per_s": ("delivered_per_s",),
    "p50_ms": ("latency_ms", "p50"),
    "p99_ms": ("latency_ms", "p99"),
    "tocsin_and_broker_cpu_ms_per_page": ("cpu_ms_per_page", "tocsin_and_broker"),
    "records_per_alert": ("records_per_alert", "total"),
    "broker_requests_per_alert": ("broker_requests_per_alert", "total"),
}


def vs_baseline(
    phases: list[dict[str, Any]], plan: list[tuple[float | None, int]], baseline: str
) -> list[dict[str, Any]]:
    """Per rate, the current code's medians beside the baseline's, and their ratio."""
    rows = []
    for rate, _ in plan:
        label = rate if rate is not None else "max"
        now = find_phase(phases, "tocsin", 1, label)
        before = find_phase(phases, "tocsin", 1, label, variant=baseline)
        if now is None or before is None:
            continue
        row: dict[str, Any] = {"rate": label}
        for name, path in VERSUS.items():
            a, b = now["median"], before["median"]
            for key in path:
                a, b = (a or {}).get(key), (b or {}).get(key)
            row[name] = {
                "baseline": b,
                "current": a,
                "ratio": round(a / b, 2) if isinstance(a, float | int) and b else None,
            }
        rows.append(row)
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench_started = time.monotonic()
    load_start = load_average()
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    peer = TimingPeer(free_port())
    await peer.start()
    peer_url = f"http://127.0.0.1:{peer.port}"
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-"))
    code = {CURRENT: ""}
    if args.baseline:
        code[args.baseline] = baseline_pythonpath(args.baseline, workdir)
    holder = StackHolder(bootstrap, redis_url, workdir, bench_config(peer_url), code)
    stack = await holder.switch(CURRENT)
    alertmanager = Alertmanager(free_port(), f"{peer_url}/alertmanager")
    alertmanager.start()
    infra = infra_process_groups(INFRA)
    requests: BrokerRequests | None = None
    requests_error = None
    if "kafka" in infra:
        try:
            requests = BrokerRequests(infra["kafka"])
        except BrokerRequestsUnavailable as e:
            requests_error = str(e)
    else:
        requests_error = "no devstack broker pid (TOCSIN_DEVSTACK_PROFILE unset)"
    probes = Probes(TopicCounter(bootstrap), requests, HopReader(bootstrap))
    await probes.counter.start()
    ingest_urls = holder.ingest_urls

    def tocsin_request(key: str, i: int) -> tuple[str, dict[str, Any]]:
        team = int(key[1:], 16) % TEAMS
        return f"{ingest_urls[i % len(ingest_urls)]}/v2/enqueue", {
            "routing_key": routing_key(team),
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {"summary": f"bench alert {key}", "source": "bench", "severity": "critical"},
        }

    def alertmanager_request(key: str, i: int) -> tuple[str, list[dict[str, Any]]]:
        return f"{alertmanager.url}/api/v2/alerts", [
            {
                "labels": {"alertname": "BenchAlert", "key": key, "severity": "critical"},
                "annotations": {"summary": f"bench alert {key}"},
            }
        ]

    criterion = SteadyCriterion(
        min_seconds=args.warmup_min_seconds,
        max_seconds=max(args.warmup_max_seconds, args.warmup_min_seconds),
        window_seconds=args.warmup_window,
    )
    runs: list[dict[str, Any]] = []
    plan = phase_plan(args, args.rates)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.concurrency)
        ) as session:
            broker_cpu = (
                (lambda: group_cpu_seconds(infra["kafka"])) if "kafka" in infra else (lambda: 0.0)
            )
            warmup = await warm_up(
                session, tocsin_request, peer, broker_cpu, criterion, args.warmup_rate, args
            )
            am_warm = await send_load(
                session, alertmanager_request, int(args.warmup_rate * 10), args.warmup_rate, 16
            )
            await wait_delivered(peer, set(am_warm.accepted), args.drain_seconds)

            am_cpu: CpuSources = {
                "alertmanager": lambda: tree_cpu_seconds(alertmanager.pid or 0),
            }

            async def phase(system: str, rate: float | None, count: int, rep: int) -> None:
                make: MakeRequest = tocsin_request
                cpu, phase_probes = am_cpu, None
                if system == "alertmanager":
                    make = alertmanager_request
                else:
                    cpu, phase_probes = tocsin_cpu_sources(holder.stack, infra), probes
                result = await run_phase(
                    system, rate, count, 1, make, session, peer, cpu, phase_probes, args
                )
                result["variant"] = holder.variant if system == "tocsin" else ""
                result["rep"] = rep
                runs.append(result)

            pids = {n: s.proc.pid for n, s in stack.services.items() if s.proc}
            memory_before = {n: rss_bytes(p) for n, p in pids.items()}
            redis_before = int((await redis.info("memory"))["used_memory"])
            am_before = alertmanager.rss_bytes()
            for rep in range(args.reps):
                if not args.baseline:
                    # Phase by phase; which system goes first alternates by repetition.
                    order = ("tocsin", "alertmanager")[:: 1 if rep % 2 == 0 else -1]
                    for (rate, count), system in itertools.product(plan, order):
                        await phase(system, rate, count, rep)
                    continue
                # Baseline and current code, one after the other on the same warm broker
                # (their stacks take turns), Alertmanager between them.
                first, second = (CURRENT, args.baseline)[:: 1 if rep % 2 == 0 else -1]
                for variant in (first, "alertmanager", second):
                    if variant != "alertmanager":
                        await holder.switch(variant, session, make=tocsin_request, peer=peer)
                    for rate, count in plan:
                        await phase(
                            "alertmanager" if variant == "alertmanager" else "tocsin",
                            rate,
                            count,
                            rep,
                        )
            memory: dict[str, Any] = {"skipped": "with --baseline (two stacks took turns)"}
            tocsin_alerts = sum(r["accepted"] for r in runs if r["system"] == "tocsin")
            if not args.baseline:
                memory_after = {n: rss_bytes(p) for n, p in pids.items()}
                redis_after = int((await redis.info("memory"))["used_memory"])
                state_bytes = sum(
                    memory_after[n] - memory_before[n] for n in ("correlation", "escalation")
                )
                memory = {
                    "open_incidents": tocsin_alerts,
                    "bytes_per_open_incident": {
                        "redis": round((redis_after - redis_before) / max(tocsin_alerts, 1)),
                        "services_rss": round(state_bytes / max(tocsin_alerts, 1)),
                    },
                    "alertmanager_rss_growth_per_alert": round(
                        (alertmanager.rss_bytes() - am_before) / max(tocsin_alerts, 1)
                    ),
                }

            scale_out: dict[str, Any] = {}
            if args.two_worker_rates:
                stack = await holder.switch(CURRENT, session, make=tocsin_request, peer=peer)
                scale_out = await two_workers(
                    stack, session, peer, infra, probes, tocsin_request, ingest_urls, runs, args
                )
    finally:
        alertmanager.stop()
        if requests is not None:
            requests.stop()
        await probes.counter.stop()
        await holder.stop()
        await peer.stop()
        await redis.aclose()

    phases = summarize_phases(runs)
    ratios = []
    for rate, _ in plan:
        label = rate if rate is not None else "max"
        t = find_phase(phases, "tocsin", 1, label)
        a = find_phase(phases, "alertmanager", 1, label, variant="")
        if t is None or a is None:
            continue
        tm, am = t["median"], a["median"]
        ratios.append(
            {
                "rate": label,
                "pages_per_s_ratio": round(
                    tm["delivered_per_s"] / max(am["delivered_per_s"], 1e-9), 2
                ),
                "p99_ratio": round(tm["latency_ms"]["p99"] / max(am["latency_ms"]["p99"], 1e-9), 2),
            }
        )
    if scale_out:
        scale_out["by_rate"] = scale_out_table(phases, args.two_worker_rates)
    versus = vs_baseline(phases, plan, args.baseline) if args.baseline else []
    return {
        "bench": "pipeline",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - bench_started),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "alertmanager": version(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "tracing": "off (OTEL_TRACES_EXPORTER=none)",
            "tocsin_delivery": "bundling and per-person rate limit off, as Alertmanager's grouping",
            "broker_requests": "broker JMX (RequestMetrics)" if requests else requests_error,
        },
        "settings": {
            "rates": args.rates,
            "seconds": args.seconds,
            "max_events": args.max_events,
            "reps": args.reps,
            "concurrency": args.concurrency,
            "two_worker_rates": args.two_worker_rates,
            "baseline": args.baseline,
        },
        "warmup": warmup,
        "phases": phases,
        "ratios_tocsin_over_alertmanager": ratios,
        "baseline": {"revision": args.baseline, "current_over_baseline": versus}
        if args.baseline
        else None,
        "scale_out": scale_out,
        "memory": memory,
        "runs": runs,
    }


async def two_workers(
    stack: Stack,
    session: aiohttp.ClientSession,
    peer: TimingPeer,
    infra: Mapping[str, int],
    probes: Probes,
    make: MakeRequest,
    ingest_urls: list[str],
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A second process of each pipeline service, then the two-worker phases."""
    started = time.monotonic()
    await asyncio.gather(*(stack.add_replica(name) for name in SCALED))
    ingest_urls.append(stack.http_url("alert-ingest-2"))
    # Consumer groups rebalance as the replicas join: settle that before measuring.
    warm = await send_load(
        session, make, int(args.warmup_rate * args.warmup_window), args.warmup_rate, 16
    )
    await wait_delivered(peer, set(warm.accepted), args.drain_seconds)
    cpu = tocsin_cpu_sources(stack, infra)
    plan = [(r, int(r * args.seconds) if r else args.max_events) for r in args.two_worker_rates]
    for rep in range(args.reps):
        for rate, count in plan:
            result = await run_phase(
                "tocsin", rate, count, 2, make, session, peer, cpu, probes, args
            )
            result["variant"] = CURRENT
            result["rep"] = rep
            runs.append(result)
    return {
        "workers": {name: 2 for name in SCALED},
        "ingest_load": "split evenly over the two alert-ingest processes",
        "start_seconds": round(time.monotonic() - started, 1),
    }


def scale_out_table(phases: list[dict[str, Any]], rates: list[float | None]) -> list[Any]:
    """CPU per page with two workers of each service beside one worker's (medians)."""
    rows = []
    for rate in rates:
        label = rate if rate is not None else "max"
        one = find_phase(phases, "tocsin", 1, label)
        two = find_phase(phases, "tocsin", 2, label)
        if one is None or two is None:
            continue
        a = one["median"]["cpu_ms_per_page"]["tocsin_and_broker"]
        b = two["median"]["cpu_ms_per_page"]["tocsin_and_broker"]
        rows.append(
            {
                "rate": label,
                "tocsin_and_broker_cpu_ms_per_page": {"1_worker": a, "2_workers": b},
                "ratio_2_over_1": round(b / a, 2) if a else None,
                "pages_per_s": {
                    "1_worker": one["median"]["delivered_per_s"],
                    "2_workers": two["median"]["delivered_per_s"],
                },
                "p99_ms": {
                    "1_worker": one["median"]["latency_ms"]["p99"],
                    "2_workers": two["median"]["latency_ms"]["p99"],
                },
            }
        )
    return rows


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for system, colour in (("tocsin", "tab:red"), ("alertmanager", "tab:blue")):
        rows = [p for p in result["phases"] if p["system"] == system and p["workers"] == 1]
        labels = [str(p["rate"]) for p in rows]
        medians = [p["median"] for p in rows]
        left.plot(labels, [m["delivered_per_s"] for m in medians], "o-", color=colour, label=system)
        for q, style in (("p99", "o-"), ("p50", "o--")):
            right.plot(
                labels,
                [m["latency_ms"][q] for m in medians],
                style,
                color=colour,
                label=f"{system} {q}",
            )
    reps = result["settings"]["reps"]
    left.set(title=f"pages per second (median of {reps})", xlabel="offered rate (alerts/s)")
    right.set(
        title="accepted → delivered latency (ms)", xlabel="offered rate (alerts/s)", yscale="log"
    )
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_rates(text: str, allow_max: bool = False) -> list[float | None]:
    out: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if allow_max and part == "max":
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise SystemExit(
                f"rates: {part!r} is not a number{' or max' if allow_max else ''}"
            ) from None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rates", default="50,100,200")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-events", type=int, default=3000, help="0: no max phase")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--drain-seconds", type=float, default=60)
    parser.add_argument("--warmup-rate", type=float, default=100)
    parser.add_argument("--warmup-window", type=float, default=10, help="seconds per window")
    parser.add_argument("--warmup-min-seconds", type=float, default=60)
    parser.add_argument("--warmup-max-seconds", type=float, default=180)
    parser.add_argument(
        "--two-worker-rates",
        default="200,max",
        help="phases run again with two processes of each service ('' for none)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REV",
        help="also run the services of this revision (libs/common and services/ from git), "
        "taking turns with the working tree's on the same warm broker; 'baseline' in the JSON "
        "sets the two side by side",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args()
    args.rates = [r for r in parse_rates(args.rates) if r is not None]
    args.two_worker_rates = parse_rates(args.two_worker_rates, allow_max=True)
    if args.reps < 1:
        raise SystemExit("--reps: expected at least 1")
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        chart(result, args.chart)
    print(
        json.dumps(
            {
                "duration_s": result["duration_s"],
                "warmup": {k: result["warmup"][k] for k in ("load_seconds", "steady")},
                "ratios": result["ratios_tocsin_over_alertmanager"],
                "scale_out": result["scale_out"].get("by_rate"),
                "memory": result["memory"],
            }
        )
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
