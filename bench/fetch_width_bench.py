"""Fetch width of correlation: what its consumer asks the broker for, per fetch request,
while alerts arrive at a steady rate — and the hop's latency meanwhile.

Runs its own correlation worker(s) (bench/fetch_probe.py: the worker, counting the
partitions of each fetch request of its group consumer) against the Kafka and Redis named
by TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL (a devstack profile), sends alerts on
alerts.normalized at --rate per second for --seconds over 12 services (every partition),
and reads incidents.events. Prints one JSON object per worker count: fetch requests per
second, partitions per request (all, and changelog partitions), the worker's produce
requests per alert (and how many carried events and changelog records together), and the alert → incident
event latency (p50/p99, alert handed to the producer → its event read here: the produce
to alerts.normalized, the hop, and one fetch of this bench's consumer).

--source DIR runs the workers from another checkout's code (e.g. the commit before, from
`git archive`), the probe and this bench from this one: before/after on one stack.

    eval "$(python tools/devstack.py env --profile h2)"
    python -m bench.fetch_width_bench --workers 1 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs" / "common")]

from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.secrets import generate_secret

from bench.correlation_bench import CONFIG, SERVICES, end_offsets, start_group_at_end
from bench.procstat import cpu_seconds
from bench.results_io import add_out_argument, report
from tests.integration.harness import ServiceProcess, free_port


def probe_totals(path: Path) -> dict[str, int]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    bootstrap: str, workers: list[tuple[ServiceProcess, Path]], rate: float, seconds: float
) -> dict[str, Any]:
    for w, _ in workers:
        w.start()
    await asyncio.gather(*(w.wait_healthy(180) for w, _ in workers))
    await asyncio.sleep(5)  # the group settles after the last join, recovery is over
    run_id = uuid.uuid4().hex[:8]
    start = await end_offsets(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = incident_pb2.IncidentEvent()
                    event.ParseFromString(record.value or b"")
                    at = sent_at.pop(event.alert.dedup_key, None)
                    if at is not None:
                        latencies.append(now - at)

    reader = asyncio.create_task(read())
    before = [probe_totals(path) for _, path in workers]
    cpu0 = sum(cpu_seconds(w.proc.pid) for w, _ in workers if w.proc)
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        key = f"{run_id}-{i}"
        alert = alert_pb2.Alert(
            event_id=str(uuid.uuid4()),
            service_id=SERVICES[i % len(SERVICES)],
            dedup_key=key,
            action=alert_pb2.ALERT_ACTION_TRIGGER,
            severity=alert_pb2.SEVERITY_CRITICAL,
            summary=f"fetch width {i}",
        )
        sent_at[key] = time.perf_counter()  # before: its event may be read before the ack
        await producer.send_and_wait(
            "alerts.normalized", alert.SerializeToString(), key=alert.service_id.encode()
        )
        delay = t0 + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    for _ in range(150):  # up to 30 s for the last events
        if not sent_at:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - t0
    cpu1 = sum(cpu_seconds(w.proc.pid) for w, _ in workers if w.proc)
    await asyncio.sleep(1.2)  # the probes write their totals once a second
    after = [probe_totals(path) for _, path in workers]
    reader.cancel()
    await producer.stop()
    await consumer.stop()

    def grown(name: str) -> int:
        return sum(a.get(name, 0) - b.get(name, 0) for a, b in zip(after, before, strict=True))

    requests = grown("requests")
    partitions = grown("partitions")
    changelog = grown("changelog_partitions")
    return {
        "workers": len(workers),
        "alerts": n,
        "events_missing": len(sent_at),
        "missing_examples": sorted(sent_at)[:5],
        "fetch_requests_per_second": round(requests / elapsed, 1),
        "partitions_per_fetch": round(partitions / requests, 1) if requests else 0.0,
        "changelog_partitions_per_fetch": round(changelog / requests, 1) if requests else 0.0,
        "produce_requests_per_alert": round(grown("produce_requests") / n, 2) if n else 0.0,
        "produce_requests_with_events_and_changelogs": grown("produce_requests_mixed"),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "workers_cpu_ms_per_alert": round((cpu1 - cpu0) * 1000 / n, 2) if n else 0.0,
    }


def worker(name: str, workdir: Path, env: dict[str, str]) -> tuple[ServiceProcess, Path]:
    grpc_port = free_port()
    out = workdir / f"{name}-fetches.json"
    proc = ServiceProcess(
        name,
        "bench.fetch_probe",
        {
            **env,
            "TOCSIN_GRPC_PORT": str(grpc_port),
            "TOCSIN_METRICS_PORT": str(free_port()),
            "TOCSIN_DATA_DIR": str(workdir / name),
            "TOCSIN_FETCH_PROBE_OUT": str(out),
        },
        workdir / f"{name}.log",
        grpc_port,
    )
    return proc, out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, choices=(1, 2), action="append")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout the workers run")
    add_out_argument(parser)
    args = parser.parse_args()
    bootstrap = os.environ["TOCSIN_KAFKA_BOOTSTRAP"]
    workdir = Path(tempfile.mkdtemp(prefix="fetch-width-bench-"))
    (workdir / "tocsin.yaml").write_text(CONFIG)
    source = args.source.resolve()
    env = {
        **os.environ,
        "TOCSIN_CONFIG": str(workdir / "tocsin.yaml"),
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "OTEL_TRACES_EXPORTER": "none",
        "TOCSIN_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join(
            [
                str(source / "libs" / "common"),
                str(source / "services" / "correlation"),
                str(ROOT),
            ]
        ),
    }
    results: dict[str, Any] = {
        "benchmark": "fetch_width",
        "source": str(source),
        "rate": args.rate,
        "seconds": args.seconds,
        "runs": [],
    }
    for count in args.workers or (1, 2):
        # a group of its own, starting at the end of the inputs: only this run's alerts
        group = f"fetch-width-{uuid.uuid4().hex[:8]}"
        await start_group_at_end(bootstrap, group)
        run_env = {**env, "TOCSIN_CORRELATION_APP_ID": group}
        workers = [worker(f"w{count}-{i}", workdir, run_env) for i in range(count)]
        try:
            results["runs"].append(await run(bootstrap, workers, args.rate, args.seconds))
        finally:
            for w, _ in workers:
                w.kill()
    report(results, args.out)


if __name__ == "__main__":
    asyncio.run(main())
