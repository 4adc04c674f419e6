"""Correlation throughput: N alerts produced on alerts.normalized, timed until their incident
events are out on incidents.events, with one correlation worker and with two.

Runs its own correlation worker(s) (python -m tocsin_correlation) against the Kafka and
Redis named by TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL (e.g. the h3 devstack), with a
config of 12 services spread over the partitions, grouping none (one incident per alert,
the most work per alert). Prints one JSON object: per run alerts/s, the workers' CPU time
per alert (user + system, from the first alert produced to the last event seen; the
machine is shared, so this is the steadier number) and the mean inputs per batch (from the
workers' tocsin_correlation_batch_inputs histogram). --workers 1 (or 2) runs only that one.

    eval "$(python tools/devstack.py env --profile h3)"
    python bench/correlation_bench.py --alerts 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs" / "common")]

from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.secrets import generate_secret

from bench.procstat import cpu_seconds
from bench.results_io import add_out_argument, report
from tests.integration.harness import ServiceProcess, free_port

SERVICES = [f"bench-{i}" for i in range(12)]
CONFIG = (
    "version: 1\nservices:\n"
    + "".join(f"  - {{id: {s}, name: {s}, escalation_policy: bench}}\n" for s in SERVICES)
    + (
        "users:\n  - {id: bench, name: Bench, email: bench@example.com}\n"
        "escalation_policies:\n  - id: bench\n    name: Bench\n    levels:\n"
        "      - {delay: 5m, targets: [{type: user, id: bench}]}\n"
    )
)


async def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition("incidents.events", p) for p in range(12)]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def start_group_at_end(bootstrap: str, group_id: str) -> None:
    """Commit the end offsets of correlation's input topics for a new consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        topics = ("alerts.normalized", "incidents.commands", "changes")
        parts = [TopicPartition(t, p) for t in topics for p in range(12)]
        ends = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


def workers_cpu_seconds(workers: list[ServiceProcess]) -> float:
    """User + system CPU time the worker processes used so far."""
    return sum(cpu_seconds(w.proc.pid) for w in workers if w.proc is not None)


def batch_inputs(workers: list[ServiceProcess]) -> tuple[float, float]:
    """(sum, count) of the workers' tocsin_correlation_batch_inputs histograms."""
    total = count = 0.0
    for w in workers:
        port = w.env["TOCSIN_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("tocsin_correlation_batch_inputs_sum"):
                    total += float(line.split()[-1])
                elif line.startswith("tocsin_correlation_batch_inputs_count"):
                    count += float(line.split()[-1])
    return total, count


async def run(bootstrap: str, n: int, workers: list[ServiceProcess]) -> dict[str, float]:
    for w in workers:
        w.start()
    await asyncio.gather(*(w.wait_healthy(180) for w in workers))
    await asyncio.sleep(3)  # let the group settle after the last join
    run_id = uuid.uuid4().hex[:8]
    start_offsets = await end_offsets(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    consumer.assign(list(start_offsets))
    for tp, offset in start_offsets.items():
        consumer.seek(tp, offset)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    alerts = []
    for i in range(n):
        alert = alert_pb2.Alert(
            event_id=str(uuid.uuid4()),
            service_id=SERVICES[i % len(SERVICES)],
            dedup_key=f"{run_id}-{i}",
            action=alert_pb2.ALERT_ACTION_TRIGGER,
            severity=alert_pb2.SEVERITY_CRITICAL,
            summary=f"bench alert {i}",
        )
        alerts.append((alert.service_id.encode(), alert.SerializeToString()))
    batches0 = batch_inputs(workers)
    cpu0 = workers_cpu_seconds(workers)
    cpu_last = cpu0
    t0 = time.perf_counter()
    for key, value in alerts:
        await producer.send("alerts.normalized", value, key=key)
    await producer.flush()
    produced = time.perf_counter() - t0
    seen = 0
    last = t0
    deadline = time.monotonic() + max(120.0, n / 500)
    while seen < n and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        for records in batch.values():
            for record in records:
                event = incident_pb2.IncidentEvent()
                event.ParseFromString(record.value or b"")
                if event.alert.dedup_key.startswith(run_id):
                    seen += 1
                    last = time.perf_counter()
                    cpu_last = (
                        workers_cpu_seconds(workers) if seen % 500 == 0 or seen == n else cpu_last
                    )
    batches1 = batch_inputs(workers)
    await producer.stop()
    await consumer.stop()
    elapsed = last - t0
    batch_sum, batch_count = (b - a for a, b in zip(batches0, batches1, strict=True))
    return {
        "alerts": n,
        "events_seen": seen,
        "produce_seconds": round(produced, 3),
        "seconds": round(elapsed, 3),
        "alerts_per_second": round(seen / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_us_per_alert": round((cpu_last - cpu0) * 1e6 / seen, 1) if seen else 0.0,
        "inputs_per_batch": round(batch_sum / batch_count, 1) if batch_count else 0.0,
    }


def worker(name: str, workdir: Path, env: dict[str, str]) -> ServiceProcess:
    grpc_port = free_port()
    proc = ServiceProcess(
        name,
        "tocsin_correlation",
        {
            **env,
            "TOCSIN_GRPC_PORT": str(grpc_port),
            "TOCSIN_METRICS_PORT": str(free_port()),
            "TOCSIN_DATA_DIR": str(workdir / name),
        },
        workdir / f"{name}.log",
        grpc_port,
    )
    return proc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--workers", type=int, choices=(1, 2), action="append")
    add_out_argument(parser)
    args = parser.parse_args()
    bootstrap = os.environ["TOCSIN_KAFKA_BOOTSTRAP"]
    workdir = Path(tempfile.mkdtemp(prefix="correlation-bench-"))
    (workdir / "tocsin.yaml").write_text(CONFIG)
    env = {
        **os.environ,
        "TOCSIN_CONFIG": str(workdir / "tocsin.yaml"),
        "TOCSIN_SERVICE_SECRET": generate_secret(),
        "OTEL_TRACES_EXPORTER": "none",
        "TOCSIN_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "libs" / "common"), str(ROOT / "services" / "correlation")]
        ),
    }
    results: dict[str, object] = {"benchmark": "correlation", "workdir": str(workdir)}
    for count in args.workers or (1, 2):
        # A consumer group of its own per run, starting at the topics' ends: what earlier
        # benches left on the topics is not this run's work.
        app_id = f"tocsin-correlation-bench-{uuid.uuid4().hex[:8]}"
        await start_group_at_end(bootstrap, app_id)
        env["TOCSIN_CORRELATION_APP_ID"] = app_id
        procs = [worker(f"bench-worker-{count}-{i}", workdir, env) for i in range(count)]
        try:
            results[f"workers_{count}"] = await run(bootstrap, args.alerts, procs)
        finally:
            for p in procs:
                p.kill(signal.SIGTERM)
    report(results, args.out)


if __name__ == "__main__":
    asyncio.run(main())
