"""insight: backfill throughput and report latency (docs/insight-service.md).

1. Produces ``--events`` incident events on incidents.events: ``--events / 10`` incidents of
   10 events each (triggered, escalated to level 1 and 2, three alerts joining, two pages'
   timeline entries, acknowledged, resolved), created over the last 90 days on 20 services.
2. Backfill: ``python -m tocsin_insight replay`` reads the topics from their beginning into
   a new generation, once; timed from start to exit, with its peak resident memory (the
   consumer holds one batch of at most 5,000 records at a time: memory does not grow with
   the number of events). Target: >= 10,000 events/s.
3. Report: ``Report`` grouped by service and week over those 90 days, as the API runs it
   (reports.report on the serving generation, percentiles in PostgreSQL), ``--queries``
   times. Target: p99 <= 200 ms.

Runs against the Kafka and PostgreSQL named by TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_POSTGRES_URL
(`make bench`'s stack, or e.g. the h3 devstack):

    eval "$(python tools/devstack.py env --profile h3)"
    python -m bench.insight_bench --events 1000000 --out bench/results/insight.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs" / "common")]

from tocsin.v1 import incident_pb2
from tocsin_common.transport import PostgresConnection
from tocsin_insight import db, reports, schema

from bench.results_io import add_out_argument, report

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


async def report_latency(queries: int) -> dict[str, float | int | str]:
    conn = await db.connect(PostgresConnection.from_env())
    try:
        generation = await schema.serving(conn)
        assert generation is not None
        since = datetime.now(UTC) - timedelta(days=DAYS)
        query = reports.report_query(reports.make_filter(since=since), ["service"], "week")
        rows = await reports.report(conn, generation, query)  # warm the cache once
        incidents = sum(r.incidents for r in rows)
        times: list[float] = []
        for _ in range(queries):
            started = time.perf_counter()
            await reports.report(conn, generation, query)
            times.append(time.perf_counter() - started)
    finally:
        await conn.close()
    times.sort()
    return {
        "generation": generation,
        "incidents": incidents,
        "rows": len(rows),
        "queries": queries,
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
        "max_ms": 1000 * times[-1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    add_out_argument(parser)
    args = parser.parse_args()
    bootstrap = os.environ["TOCSIN_KAFKA_BOOTSTRAP"]
    run, produce_seconds = await produce(bootstrap, args.events)
    records = await topic_records(bootstrap)
    replay = backfill()
    latency = await report_latency(args.queries)
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
            "report_by_service_and_week": {
                **{k: round(v, 1) if isinstance(v, float) else v for k, v in latency.items()},
                "target_p99_ms": 200,
                "meets_target": float(latency["p99_ms"]) <= 200,
            },
        },
        args.out,
    )


if __name__ == "__main__":
    asyncio.run(main())
