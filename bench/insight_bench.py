"""insight: backfill throughput and report latency (docs/insight-service.md).

1. Produces ``--events`` incident events on incidents.events: ``--events / 10`` incidents of
   10 events each (triggered, escalated to level 1 and 2, three alerts joining, two pages'
   timeline entries, acknowledged, resolved), created over the last 90 days on 20 services.
2. Backfill: ``python -m tocsin_insight replay`` reads the topics from their beginning into
   a new generation, once; timed from start to exit, with its peak resident memory (the
   consumer holds one batch of at most 5,000 records at a time: memory does not grow with
   the number of events). Target: >= 10,000 events/s.
3. Report: ``Report`` grouped by service and week over those 90 days, as the API runs it
   (reports.report on the serving generation: whole days from the report rollup, the rest
   from the facts), ``--queries`` times in each of ``--report-runs`` rounds; alternating
   with the rounds, the same report computed whole in PostgreSQL from the facts
   (``before_in_sql``: how it was computed before the rollup). Target: p99 <= 200 ms.
4. Lag: an insight process (python -m tocsin_insight) runs while incidents are opened and
   resolved at ``--lag-rate`` per second for ``--lag-seconds``; the lag of each is from the
   moment its RESOLVED event is acknowledged by Kafka to the moment its fact shows it
   resolved (PostgreSQL polled every 50 ms). Target: p99 <= 2 s at 200 incidents/s.

Runs against the Kafka and PostgreSQL named by TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_POSTGRES_URL
(`make bench`'s stack, or e.g. the h3 devstack):

    eval "$(python tools/devstack.py env --profile h3)"
    python -m bench.insight_bench --events 1000000 --out bench/results/insight.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs" / "common")]

from tocsin.v1 import incident_pb2
from tocsin_common.secrets import generate_secret
from tocsin_common.transport import PostgresConnection
from tocsin_insight import db, reports, schema

from bench.results_io import add_out_argument, report
from tests.integration.harness import ServiceProcess, free_port

E = incident_pb2
SERVICES = [f"insight-bench-{i}" for i in range(20)]
DAYS = 90
STEPS = (
    (E.INCIDENT_EVENT_TYPE_TRIGGERED, 0.0, "source", "triggered"),
    (E.INCIDENT_EVENT_TYPE_ESCALATED, 0.1, "system", "escalated to level 1: paged a"),
    (E.INCIDENT_EVENT_TYPE_NOTIFIED, 0.3, "notification", "delivered to a by sms"),
    (E.INCIDENT_EVENT_TYPE_ALERT_ADDED, 20.0, "source", "alert joined"),
    (E.INCIDENT_EVENT_TYPE_ALERT_ADDED, 40.0, "source", "alert joined"),
    (E.INCIDENT_EVENT_TYPE_ALERT_ADDED, 60.0, "source", "alert joined"),
    (E.INCIDENT_EVENT_TYPE_ESCALATED, 300.0, "system", "escalated to level 2: paged b"),
    (E.INCIDENT_EVENT_TYPE_NOTIFIED, 300.3, "notification", "delivered to b by sms"),
    (E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 0.0, "b", "acknowledged by b"),  # time: per incident
    (E.INCIDENT_EVENT_TYPE_RESOLVED, 0.0, "b", "resolved by b"),
)


def incident_events(run: str, i: int, now: datetime) -> list[bytes]:
    created = now - timedelta(seconds=(i * 7919) % (DAYS * 86400 - 7200) + 3600)
    ack = 30.0 + (i * 37) % 900
    resolve = ack + 60.0 + (i * 53) % 3600
    incident_id = f"{run}-{i}"
    out: list[bytes] = []
    for n, (kind, seconds, actor, message) in enumerate(STEPS):
        if kind == E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED:
            seconds = ack
        elif kind == E.INCIDENT_EVENT_TYPE_RESOLVED:
            seconds = resolve
        e = incident_pb2.IncidentEvent(
            event_id=f"{incident_id}-{n}", type=kind, actor=actor, message=message
        )  # type: ignore[arg-type]
        e.at.FromDatetime(created + timedelta(seconds=seconds))
        inc = e.incident
        inc.incident_id = incident_id
        inc.service_id = SERVICES[i % len(SERVICES)]
        inc.title = f"bench incident {i}"
        inc.urgency = E.URGENCY_HIGH
        inc.group_key = f"g{i % 500}"
        inc.alert_count = 1 + min(3, max(0, n - 2))
        inc.created_at.FromDatetime(created)
        out.append(e.SerializeToString())
    return out


async def produce(bootstrap: str, events: int) -> tuple[str, float]:
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i in range(events // len(STEPS)):
            key = f"{run}-{i}".encode()
            for value in incident_events(run, i, now):
                pending.append(await producer.send("incidents.events", key=key, value=value))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return run, time.perf_counter() - started


async def topic_records(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition("incidents.events", p) for p in range(12)]
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        return sum(ends[p] - starts[p] for p in parts)
    finally:
        await consumer.stop()


def backfill() -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tocsin_insight", "replay"],
        cwd=ROOT,
        env={
            **os.environ,
            "TOCSIN_CONFIG": os.environ.get("TOCSIN_CONFIG", "config/tocsin.example.yaml"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"replay failed:\n{output[-3000:]}")
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
        "max_ms": 1000 * times[-1],
    }


async def report_latency(queries: int, runs: int) -> dict[str, object]:
    """``runs`` rounds of ``queries`` reports each, as the API runs them (the rollup and the
    facts, merged: reports.report), alternating round by round with the same report computed
    whole by PostgreSQL from the facts (reports.report_in_sql: how it was computed before
    the rollup), so both meet the same machine load."""
    conn = await db.connect(PostgresConnection.from_env())
    try:
        generation = await schema.serving(conn)
        assert generation is not None
        since = datetime.now(UTC) - timedelta(days=DAYS)
        query = reports.report_query(reports.make_filter(since=since), ["service"], "week")
        rows = await reports.report(conn, generation, query)  # warm the cache once
        incidents = sum(r.incidents for r in rows)
        assert rows == await reports.report(conn, generation, query, use_rollup=False)
        await reports.report_in_sql(conn, generation, query)

        async def from_rollup() -> object:
            return await reports.report(conn, generation, query)

        async def in_sql() -> object:
            return await reports.report_in_sql(conn, generation, query)

        paths: dict[str, Callable[[], Awaitable[object]]] = {
            "rollup": from_rollup,
            "in_sql": in_sql,
        }
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(runs):
            for name, run in paths.items():
                times: list[float] = []
                for _ in range(queries):
                    started = time.perf_counter()
                    await run()
                    times.append(time.perf_counter() - started)
                rounds[name].append(_percentiles(times))
    finally:
        await conn.close()

    def summary(name: str) -> dict[str, object]:
        per_run = rounds[name]
        return {
            "p50_ms_median_of_runs": round(statistics.median(r["p50_ms"] for r in per_run), 1),
            "p99_ms_median_of_runs": round(statistics.median(r["p99_ms"] for r in per_run), 1),
            "runs": [{k: round(v, 1) for k, v in r.items()} for r in per_run],
        }

    rollup = summary("rollup")
    return {
        "generation": generation,
        "incidents": incidents,
        "rows": len(rows),
        "queries_per_run": queries,
        **rollup,
        "target_p99_ms": 200,
        "meets_target": all(r["p99_ms"] <= 200 for r in rounds["rollup"]),
        "before_in_sql": summary("in_sql"),
    }


async def lag(bootstrap: str, rate: int, seconds: int) -> dict[str, float | int | bool]:
    workdir = Path(tempfile.mkdtemp(prefix="insight-bench-"))
    grpc_port = free_port()
    proc = ServiceProcess(
        "insight",
        "tocsin_insight",
        {
            **os.environ,
            "TOCSIN_CONFIG": os.environ.get(
                "TOCSIN_CONFIG", str(ROOT / "config" / "tocsin.example.yaml")
            ),
            "TOCSIN_SERVICE_SECRET": generate_secret(),
            "TOCSIN_GRPC_PORT": str(grpc_port),
            "TOCSIN_METRICS_PORT": str(free_port()),
            "TOCSIN_DATA_DIR": str(workdir / "data"),
            "OTEL_TRACES_EXPORTER": "none",
        },
        workdir / "insight.log",
        grpc_port,
    )
    proc.start()
    conn = await db.connect(PostgresConnection.from_env())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    await producer.start()
    try:
        await proc.wait_healthy()
        generation = await schema.serving(conn)
        run = uuid.uuid4().hex[:8]
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = asyncio.Event()

        async def watch() -> None:
            table = f"insight_{generation}.incident_facts"
            while not stop.is_set() or len(seen) < len(sent):
                pending = [i for i in sent if i not in seen]
                if pending:
                    cur = await conn.execute(
                        f"SELECT incident_id FROM {table} "
                        "WHERE incident_id = ANY(%s) AND resolved_at IS NOT NULL",
                        (pending,),
                    )
                    now = time.perf_counter()
                    for (incident_id,) in await cur.fetchall():
                        seen[incident_id] = now
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        for n in range(rate * seconds):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            incident_id = f"{run}-lag-{n}"
            now = datetime.now(UTC)
            values = []
            for kind, actor in ((E.INCIDENT_EVENT_TYPE_TRIGGERED, "source"),
                                (E.INCIDENT_EVENT_TYPE_RESOLVED, "source")):  # fmt: skip
                e = incident_pb2.IncidentEvent(
                    event_id=f"{incident_id}-{kind}", type=kind, actor=actor
                )  # type: ignore[arg-type]
                e.at.FromDatetime(now)
                e.incident.incident_id = incident_id
                e.incident.service_id = SERVICES[n % len(SERVICES)]
                e.incident.created_at.FromDatetime(now)
                values.append(e.SerializeToString())
            await producer.send("incidents.events", values[0], key=incident_id.encode())
            future = await producer.send("incidents.events", values[1], key=incident_id.encode())
            future.add_done_callback(
                lambda _, i=incident_id: sent.__setitem__(i, time.perf_counter())
            )
        await producer.flush()
        stop.set()
        await asyncio.wait_for(watcher, timeout=60)
    finally:
        await producer.stop()
        await conn.close()
        proc.kill(signal.SIGTERM)
    lags = sorted(seen[i] - sent[i] for i in sent)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    return {
        "incidents": len(lags),
        "rate_per_second": rate,
        "p50_ms": round(1000 * lags[len(lags) // 2], 1),
        "p99_ms": round(1000 * p99, 1),
        "max_ms": round(1000 * lags[-1], 1),
        "target_p99_ms": 2000,
        "meets_target": p99 <= 2.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--report-runs", type=int, default=3)
    parser.add_argument("--lag-rate", type=int, default=200)
    parser.add_argument("--lag-seconds", type=int, default=30)
    add_out_argument(parser)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only the report rounds, on the serving generation an earlier run filled",
    )
    args = parser.parse_args()
    if args.report_only:
        report(
            {
                "bench": "insight",
                "report_by_service_and_week": await report_latency(args.queries, args.report_runs),
            },
            args.out,
        )
        return
    bootstrap = os.environ["TOCSIN_KAFKA_BOOTSTRAP"]
    run, produce_seconds = await produce(bootstrap, args.events)
    records = await topic_records(bootstrap)
    replay = backfill()
    latency = await report_latency(args.queries, args.report_runs)
    lagged = await lag(bootstrap, args.lag_rate, args.lag_seconds)
    rate = records / replay["seconds"]
    report(
        {
            "bench": "insight",
            "run": run,
            "events_produced": args.events,
            "produce_seconds": round(produce_seconds, 1),
            "backfill": {
                "incident_events_replayed": records,
                "seconds": round(replay["seconds"], 2),
                "events_per_second": round(rate),
                "cpu_seconds": round(replay["cpu_seconds"], 1),
                "peak_rss_mb": round(replay["peak_rss_mb"], 1),
                "target_events_per_second": 10_000,
                "meets_target": rate >= 10_000,
            },
            "report_by_service_and_week": latency,
            "resolution_to_report_lag": lagged,
        },
        args.out,
    )


if __name__ == "__main__":
    asyncio.run(main())
