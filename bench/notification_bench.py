"""Notification throughput and latency: NotificationRequests straight onto
notifications.requests, delivered by the real notification service (with the real
escalation service answering its contact look-ups over gRPC) to a local webhook peer.

    eval "$(python tools/devstack.py env --profile h1)"
    python -m bench.notification_bench --baseline HEAD --out bench/results/notification.json

With `--baseline GIT_REV`, every round runs twice, first against the notification package
of that revision, then against the working tree's (services restarted and warmed up each
time): a before/after measured in one run, alternated so the machine's other load falls on
both alike.

- burst rounds: `--pages` requests produced as fast as the producer goes, each to a different
  user (so bundling and rate limits do not merge pages); pages/s delivered and p50/p99 of
  request -> delivered (peer receive time). Latency here is mostly queueing behind the burst.
- paced: `--rate` requests/s for `--paced-seconds`; p50/p99 request -> delivered at a load
  the service keeps up with.
- `--notification-workers N` runs N notification processes in the one consumer group (the
  service's scale-out: they share the topic's partitions).
- every phase: CPU milliseconds per page of escalation and notification, of this process
  (producer and webhook peer) and, run under `devstack.py env`, of Kafka and Redis: the
  machine's whole budget per page.

Before the services start, each one's consumer group is moved to the end of its input
topic: notification's on notifications.requests, so requests left behind by an earlier,
aborted run are not delivered first; escalation's on incidents.events, so the incidents
earlier benches left there (`make bench` runs the pipeline and correlation benches first)
are not applied during the rounds (that cost escalation ~1.5 ms CPU per page, where its
contact look-ups cost ~0.08). Before they stop, the bench waits until the group has
committed every request, so no page is cut off between its delivery and its record. Every
page must arrive exactly once. The bench fails (exit status 1, JSON still written) when a
page is missing, when one arrives twice, when no page arrives for
`--stall-timeout` seconds, or when the whole run exceeds `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.secrets import generate_secret
from tocsin_common.settings import kafka_partitions
from tocsin_common.topics import INCIDENTS_EVENTS, NOTIFICATIONS_REQUESTS, Topic

from bench.procstat import cpu_seconds, group_cpu_seconds, infra_process_groups
from bench.results_io import add_out_argument, report
from tests.integration.harness import ROOT, ServiceProcess, free_port, infra_from_env

BUNDLE_WINDOW_S = 2.0  # the service's default; rounds are spaced further apart than this
GROUP_ID = "tocsin-notification"  # the notification service's consumer group
ESCALATION_GROUP_ID = "tocsin-escalation"  # escalation's, on incidents.events
REQUESTS = NOTIFICATIONS_REQUESTS.name


class BenchFailed(Exception):
    pass


def config(users: int, peer: str) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "users": [
                {
                    "id": f"bench-{n}",
                    "name": f"Bench {n}",
                    "email": f"bench{n}@example.com",
                    "contact_methods": [
                        {"id": "hook", "type": "webhook", "address": f"{peer}/pages/{n}"}
                    ],
                }
                for n in range(users)
            ],
            # The receiving peer is on 127.0.0.1, refused unless allow-listed.
            "notification": {"outgoing": {"allow": ["127.0.0.1"]}},
        }
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Peer:
    """The webhook receiver: the arrival time of every idempotency key, and repeats."""

    port: int
    arrived: dict[str, float] = field(default_factory=dict)
    repeats: int = 0
    repeated: list[str] = field(default_factory=list)  # the first keys that came again
    last_arrival: float = field(default_factory=time.perf_counter)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.perf_counter()
        key = request.headers.get("Idempotency-Key", "")
        if key in self.arrived:
            self.repeats += 1
            if len(self.repeated) < 20:
                self.repeated.append(key)
        else:
            self.arrived[key] = now
        self.last_arrival = now
        return web.json_response({"ok": True})


def request_for(run_id: str, n: int) -> tuple[str, bytes]:
    incident_id = f"bench-{run_id}-{n}"
    key = f"{incident_id}:1:0:bench-{n}:0"
    request = notification_pb2.NotificationRequest(
        request_id=key,
        idempotency_key=key,
        user_id=f"bench-{n}",
        contact_method_id="hook",
        incident=incident_pb2.Incident(
            incident_id=incident_id, service_id="bench", title=f"bench page {n}"
        ),
    )
    return key, request.SerializeToString()


async def wait_delivered(peer: Peer, keys: list[str], stall_timeout: float) -> None:
    """Until every key arrived; BenchFailed when nothing arrives for stall_timeout s."""
    missing = [k for k in keys if k not in peer.arrived]
    while missing:
        await asyncio.sleep(0.05)
        missing = [k for k in missing if k not in peer.arrived]
        if missing and time.perf_counter() - peer.last_arrival > stall_timeout:
            raise BenchFailed(
                f"stalled: {len(missing)} of {len(keys)} pages missing, none arrived "
                f"for {stall_timeout:g}s (first missing: {missing[0]})"
            )


def summary(
    name: str, peer: Peer, sent: dict[str, float], started: float, produced: float
) -> dict[str, Any]:
    arrived = {k: peer.arrived[k] for k in sent if k in peer.arrived}
    latencies = [(arrived[k] - sent[k]) * 1000 for k in arrived]
    finished = max(arrived.values()) if arrived else time.perf_counter()
    seconds = finished - started
    return {
        "phase": name,
        "pages": len(sent),
        "delivered": len(arrived),
        "produce_seconds": round(produced - started, 3),
        "seconds": round(seconds, 3),
        "pages_per_second": round(len(arrived) / seconds, 1) if seconds > 0 else None,
        "latency_ms_p50": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 1) if latencies else None,
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
    }


def _pid(proc: ServiceProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


class CpuMeter:
    """CPU milliseconds per page each service spent over a phase: unlike pages/s, this
    does not depend on how much of the machine other processes took meanwhile. Also the
    bench process's own (producer and webhook peer) and, when known, Kafka's and Redis's:
    the whole machine's budget per page."""

    def __init__(self, procs: list[ServiceProcess]) -> None:
        self._procs = procs
        self._start = [cpu_seconds(_pid(p)) for p in procs]
        self._infra = infra_process_groups()
        self._infra_start = {name: group_cpu_seconds(g) for name, g in self._infra.items()}
        self._own_start = time.process_time()

    def per_page(self, pages: int) -> dict[str, float]:
        pages = max(pages, 1)
        used: dict[str, float] = {}  # by service: the workers of one service add up
        for p, s in zip(self._procs, self._start, strict=True):
            name = p.name.rstrip("0123456789")
            used[name] = used.get(name, 0.0) + cpu_seconds(_pid(p)) - s
        result = {
            f"{name}_cpu_ms_per_page": round(seconds * 1000 / pages, 3)
            for name, seconds in used.items()
        }
        for name, group in self._infra.items():
            spent = group_cpu_seconds(group) - self._infra_start[name]
            result[f"{name}_cpu_ms_per_page"] = round(spent * 1000 / pages, 3)
        result["bench_cpu_ms_per_page"] = round(
            (time.process_time() - self._own_start) * 1000 / pages, 3
        )
        return result


async def phase(
    producer: AIOKafkaProducer,
    peer: Peer,
    name: str,
    pages: int,
    stall_timeout: float,
    procs: list[ServiceProcess],
    rate: float | None = None,
) -> dict[str, Any]:
    """Send `pages` requests, all at once or at `rate` per second, and measure them."""
    run_id = uuid.uuid4().hex[:8]
    requests = [request_for(run_id, n) for n in range(pages)]
    sent: dict[str, float] = {}
    meter = CpuMeter(procs)
    peer.last_arrival = time.perf_counter()
    started = time.perf_counter()
    futures = []
    for n, (key, value) in enumerate(requests):
        if rate is not None:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent[key] = time.perf_counter()
        futures.append(await producer.send(REQUESTS, value, key=f"bench-{n}".encode()))
    await asyncio.gather(*futures)
    produced = time.perf_counter()
    try:
        await wait_delivered(peer, list(sent), stall_timeout)
    finally:
        result = summary(name, peer, sent, started, produced)
        result.update(meter.per_page(result["delivered"]))
        if rate is not None:
            result["rate"] = rate
        print(f"[bench] {name}: {result}", file=sys.stderr, flush=True)
    return result


def partitions_of(topic: Topic) -> list[TopicPartition]:
    count = topic.partition_count(kafka_partitions())
    return [TopicPartition(topic.name, p) for p in range(count)]


async def skip_backlog(bootstrap: str, group_id: str, topic: Topic) -> None:
    """Move consumer group `group_id` to the end of `topic`: what earlier runs left there
    would otherwise be processed during the rounds (requests delivered to a peer that is
    gone, incidents applied at escalation's CPU cost)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = partitions_of(topic)
        consumer.assign(partitions)
        await consumer.commit(dict(await consumer.end_offsets(partitions)))
    finally:
        await consumer.stop()


async def wait_committed(bootstrap: str, timeout_s: float) -> None:
    """Until the notification group committed every request produced so far: the service
    finished them (outcome recorded), so stopping it now interrupts nothing."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=GROUP_ID, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = partitions_of(NOTIFICATIONS_REQUESTS)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            behind = 0
            for tp in partitions:
                committed = await consumer.committed(tp) or 0
                behind += max(0, ends[tp] - committed)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise BenchFailed(f"{behind} requests still uncommitted {timeout_s:g}s after")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


def service(
    name: str, module: str, workdir: Path, env: dict[str, str], grpc_port: int
) -> ServiceProcess:
    return ServiceProcess(
        name,
        module,
        {
            **env,
            "TOCSIN_GRPC_PORT": str(grpc_port),
            "TOCSIN_METRICS_PORT": str(free_port()),
            "TOCSIN_HTTP_PORT": str(free_port()),
            "TOCSIN_DATA_DIR": str(workdir / "data" / name),
        },
        workdir / f"{name}.log",
        grpc_port,
    )


def checkout_baseline(rev: str, workdir: Path) -> Path:
    """The notification package as it was at git revision `rev`, unpacked under workdir;
    put first on PYTHONPATH, it replaces the working tree's for the baseline run."""
    target = workdir / "baseline-code"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev, "services/notification/tocsin_notification"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "services" / "notification"


MEDIANS = (
    "pages_per_second",
    "latency_ms_p50",
    "latency_ms_p99",
    "notification_cpu_ms_per_page",
    "escalation_cpu_ms_per_page",
)


async def run_variant(
    args: argparse.Namespace,
    result: dict[str, Any],
    env: dict[str, str],
    workdir: Path,
    peer: Peer,
    users: int,
    *,
    rounds: int,
    paced_phase: bool,
) -> None:
    """Start escalation and notification, warm up, run `rounds` bursts (appended to
    result["rounds"]) and maybe the paced phase, stop them."""
    bootstrap = env["TOCSIN_KAFKA_BOOTSTRAP"]
    escalation_port = free_port()
    env = {**env, "TOCSIN_ESCALATION_GRPC": f"127.0.0.1:{escalation_port}"}
    logs = workdir / ("baseline" if "revision" in result else "current")
    logs.mkdir(exist_ok=True)
    procs = [
        service("escalation", "tocsin_escalation", logs, env, escalation_port),
        *(
            service(
                f"notification{'' if n == 1 else n}", "tocsin_notification", logs, env, free_port()
            )
            for n in range(1, args.notification_workers + 1)
        ),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    repeats_before = peer.repeats
    try:
        await skip_backlog(bootstrap, GROUP_ID, NOTIFICATIONS_REQUESTS)
        await skip_backlog(bootstrap, ESCALATION_GROUP_ID, INCIDENTS_EVENTS)
        for proc in procs:
            proc.start()
        await asyncio.gather(*(p.wait_healthy(180) for p in procs))
        await producer.start()
        if args.warmup:
            await phase(producer, peer, "warm-up", args.warmup, args.stall_timeout, procs)
        for _ in range(rounds):
            await asyncio.sleep(BUNDLE_WINDOW_S + 1)  # past the bundling window of each user
            name = f"burst {len(result['rounds']) + 1}"
            result["rounds"].append(
                await phase(producer, peer, name, args.pages, args.stall_timeout, procs)
            )
        if paced_phase:
            await asyncio.sleep(BUNDLE_WINDOW_S + 1)
            result["paced"] = await phase(
                producer,
                peer,
                f"paced {args.rate:g}/s",
                min(users, int(args.rate * args.paced_seconds)),
                args.stall_timeout,
                procs,
                rate=args.rate,
            )
        # Let the service finish (statuses recorded, offsets committed) before stopping it.
        await wait_committed(bootstrap, args.stall_timeout)
        if peer.repeats > repeats_before:
            raise BenchFailed(f"{peer.repeats - repeats_before} pages arrived more than once")
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name}\n{proc.log_tail(3000)}", file=sys.stderr)
        raise
    finally:
        result["duplicates"] = result.get("duplicates", 0) + peer.repeats - repeats_before
        if peer.repeated:
            result["repeated_keys"] = list(peer.repeated)
        await producer.stop()
        for proc in procs:
            proc.kill(signal.SIGTERM)


async def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    bootstrap, redis_url = infra_from_env()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-notification-bench-"))
    result["workdir"] = str(workdir)
    peer = Peer(free_port())
    await peer.start()
    users = max(args.pages, args.warmup, int(args.rate * args.paced_seconds))
    (workdir / "tocsin.yaml").write_text(config(users, f"http://127.0.0.1:{peer.port}"))
    env = {
        **os.environ,
        "TOCSIN_KAFKA_BOOTSTRAP": bootstrap,
        "TOCSIN_REDIS_URL": redis_url,
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "TOCSIN_CONFIG": str(workdir / "tocsin.yaml"),
        "TOCSIN_WEBHOOK_SECRET": generate_secret(),
        "TOCSIN_LINK_SECRET": generate_secret(),
        "OTEL_TRACES_EXPORTER": "none",
        "TOCSIN_LOG_LEVEL": args.log_level,
    }
    paced_phase = args.rate > 0 and args.paced_seconds > 0
    result["rounds"] = []
    variants: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    if args.baseline:
        package = checkout_baseline(args.baseline, workdir)
        path = os.pathsep.join(p for p in (str(package), env.get("PYTHONPATH", "")) if p)
        baseline: dict[str, Any] = {"revision": args.baseline, "rounds": []}
        result["baseline"] = baseline
        variants.append((f"baseline ({args.baseline})", baseline, {**env, "PYTHONPATH": path}))
    variants.append(("current (working tree)", result, env))
    try:
        if len(variants) == 1:
            await run_variant(
                args, result, env, workdir, peer, users, rounds=args.rounds, paced_phase=paced_phase
            )
        else:
            # Round by round, baseline then current: the machine's other load drifts, and
            # alternating spreads it over both alike.
            for n in range(args.rounds):
                for label, into, variant_env in variants:
                    print(f"[bench] {label}, round {n + 1}", file=sys.stderr, flush=True)
                    await run_variant(
                        args,
                        into,
                        variant_env,
                        workdir,
                        peer,
                        users,
                        rounds=1,
                        paced_phase=paced_phase and n == args.rounds - 1,
                    )
                    await asyncio.sleep(BUNDLE_WINDOW_S + 1)
        for _, into, _ in variants:
            into["median"] = {
                name: statistics.median(r[name] for r in into["rounds"]) for name in MEDIANS
            }
        if args.baseline:
            result["vs_baseline"] = {  # current / baseline
                name: round(result["median"][name] / baseline["median"][name], 2)
                for name in ("pages_per_second", "notification_cpu_ms_per_page")
            }
    finally:
        await peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=5000, help="pages per burst round")
    parser.add_argument("--rounds", type=int, default=3, help="burst rounds (medians reported)")
    parser.add_argument("--warmup", type=int, default=500, help="pages sent before measuring")
    parser.add_argument("--rate", type=float, default=100.0, help="paced phase: requests/s")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--stall-timeout", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="the whole run, seconds")
    parser.add_argument("--log-level", default="WARNING", help="the services' log level")
    parser.add_argument(
        "--notification-workers",
        type=int,
        default=1,
        help="notification processes (one consumer group: they share the partitions); "
        "their CPU per page is reported as one sum",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REV",
        help="first run the same phases against the notification package of this revision "
        "(e.g. HEAD), for a before/after measured in one run",
    )
    add_out_argument(parser)
    args = parser.parse_args()
    # Last resort if the event loop itself hangs: dump every stack and exit non-zero.
    faulthandler.dump_traceback_later(args.timeout + 120, exit=True)
    result: dict[str, Any] = {
        "benchmark": "notification",
        "cpus": os.cpu_count(),
        "pages": args.pages,
        "notification_workers": args.notification_workers,
        "ok": False,
    }
    status = 0
    try:
        asyncio.run(asyncio.wait_for(run(args, result), args.timeout))
        result["ok"] = True
    except TimeoutError:
        result["error"] = f"did not finish within --timeout {args.timeout:g}s"
        status = 1
    except BenchFailed as e:
        result["error"] = str(e)
        status = 1
    report(result, args.out)
    sys.exit(status)


if __name__ == "__main__":
    main()
