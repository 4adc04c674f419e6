"""Kafka records and consumer batches per alert, through the real stack.

    python -m bench.record_count --alerts 30 [--out bench/results/records.json]

Starts the services (tests/integration/harness.py) on the Kafka, Redis and PostgreSQL of
TOCSIN_KAFKA_BOOTSTRAP / TOCSIN_REDIS_URL / TOCSIN_POSTGRES_URL (a devstack profile's
`env`), with one service whose alerts each open an incident (grouping off) and page one
person at once by webhook. After one warm-up alert, it sends ``--alerts`` alerts one at a
time, each once the previous one's page arrived and the topics went quiet, and reports:

- records per alert: the sum over every Tocsin topic (``tocsin_common.topics``) and every
  faust changelog topic of the end-offset deltas, divided by the alerts sent, with the
  figure per topic;
- batches per alert: correlation's batches (``tocsin_correlation_batch_inputs_count``)
  and escalation's consumer batches (``tocsin_consumer_batches_total``) over the same
  alerts, from the services' /metrics (notification's consumer takes records one by one,
  concurrently: it has no batches).

One alert at a time, so a batch holds one alert's records: what the pipeline costs per
alert when nothing amortizes it (batches under load hold many alerts).

The pure part (what is counted, the deltas, the metric sums, the report) is unit-tested
(tests/unit/test_record_count.py); :func:`end_offsets` and :func:`metric_sum` can be used by
another bench around its own load (snapshot before, snapshot after, :func:`report`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tocsin_common.topics import ALL_TOPICS

Offsets = dict[tuple[str, int], int]

TOCSIN_TOPICS = frozenset(t.name for t in ALL_TOPICS)
CHANGELOG_SUFFIX = "-changelog"
# Which metric counts which service's batches (name, label filter).
BATCH_METRICS: dict[str, tuple[str, dict[str, str]]] = {
    "correlation": ("tocsin_correlation_batch_inputs_count", {}),
    "escalation": ("tocsin_consumer_batches_total", {"service": "escalation"}),
}


def counted(topic: str) -> bool:
    """Whether records of ``topic`` count: Tocsin's topics and faust's table changelogs,
    not Kafka's own (``__consumer_offsets``, ``__transaction_state``)."""
    if topic.startswith("__"):
        return False
    return topic in TOCSIN_TOPICS or topic.endswith(CHANGELOG_SUFFIX)


def deltas(
    before: Mapping[tuple[str, int], int], after: Mapping[tuple[str, int], int]
) -> dict[str, int]:
    """Records added per counted topic between two end-offset snapshots (a partition absent
    before counts from 0: a topic created in between)."""
    out: dict[str, int] = {}
    for (topic, partition), end in after.items():
        if not counted(topic):
            continue
        start = before.get((topic, partition), 0)
        if end < start:
            raise ValueError(
                f"{topic}[{partition}]: end offset went back from {start} to {end} "
                "(topic recreated during the count?)"
            )
        if end > start:
            out[topic] = out.get(topic, 0) + end - start
    return dict(sorted(out.items()))


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of every sample of ``name`` in Prometheus text exposition ``text`` whose
    labels include ``labels``."""
    wanted = labels or {}
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, brace, rest = head.partition("{")
        if metric != name:
            continue
        found = _labels(rest.rstrip("}")) if brace else {}
        if all(found.get(k) == v for k, v in wanted.items()):
            total += float(value)
    return total


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split('",'):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip()] = value.strip().strip('"')
    return out


def report(
    alerts: int,
    offsets_before: Mapping[tuple[str, int], int],
    offsets_after: Mapping[tuple[str, int], int],
    batches_before: Mapping[str, float] | None = None,
    batches_after: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Records (and batches) per alert from two snapshots around ``alerts`` alerts."""
    if alerts <= 0:
        raise ValueError(f"alerts: must be at least 1, got {alerts}")
    by_topic = deltas(offsets_before, offsets_after)
    total = sum(by_topic.values())
    result: dict[str, Any] = {
        "alerts": alerts,
        "records": total,
        "records_per_alert": round(total / alerts, 2),
        "records_per_alert_by_topic": {t: round(n / alerts, 2) for t, n in by_topic.items()},
    }
    if batches_before is not None and batches_after is not None:
        result["batches_per_alert"] = {
            service: round((batches_after[service] - batches_before.get(service, 0.0)) / alerts, 2)
            for service in sorted(batches_after)
        }
    return result


# --- I/O -------------------------------------------------------------------------------


async def end_offsets(bootstrap: str, topics: Iterable[str] | None = None) -> Offsets:
    """The end offset of every partition of ``topics`` (default: every counted topic the
    broker has)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from tocsin_common.kafka import client_options

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options())
    await admin.start()
    try:
        names = sorted(n for n in (topics or await admin.list_topics()) if counted(n))
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    partitions = [
        TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
    ]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **client_options())
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def scrape(port: int) -> str:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def config(peer: str) -> str:
    """One service, grouping off, paging one person at once by webhook (JSON is YAML)."""
    return json.dumps(
        {
            "version": 1,
            "services": [
                {
                    "id": "rc",
                    "name": "Record count",
                    "escalation_policy": "rc-policy",
                    "integrations": [
                        {"key": "recordcount" + "0" * 21, "type": "any", "name": "rc"}
                    ],
                    "grouping": {"mode": "none"},
                }
            ],
            "users": [
                {
                    "id": "rc-user",
                    "name": "Rec Count",
                    "email": "rc@example.com",
                    "contact_methods": [
                        {"id": "hook", "type": "webhook", "address": f"{peer}/page"}
                    ],
                    "notification_rules": {
                        "high": [{"delay": "0m", "contact_method": "hook"}],
                        "low": [{"delay": "0m", "contact_method": "hook"}],
                    },
                }
            ],
            "escalation_policies": [
                {
                    "id": "rc-policy",
                    "name": "Record count",
                    "levels": [{"delay": "30m", "targets": [{"type": "user", "id": "rc-user"}]}],
                }
            ],
            "notification": {"outgoing": {"allow": ["127.0.0.1"]}},
        }
    )


async def quiet(bootstrap: str, settle_s: float, timeout_s: float = 30.0) -> Offsets:
    """End offsets once they stopped moving for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    last = await end_offsets(bootstrap)
    while True:
        await asyncio.sleep(settle_s)
        now = await end_offsets(bootstrap)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


async def run(alerts: int, settle_s: float) -> dict[str, Any]:
    import aiohttp
    from redis.asyncio import Redis

    from tests.integration.harness import Stack, infra_from_env

    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-records-"))
    stack = Stack(
        bootstrap,
        redis_url,
        workdir,
        config("{peer}"),
        extra_env={
            "OTEL_TRACES_EXPORTER": "none",
            "TOCSIN_LOG_LEVEL": "WARNING",
            # One page per alert: no bundling window, no per-person rate limit.
            "TOCSIN_NOTIFY_BUNDLE_WINDOW_S": "0",
            "TOCSIN_NOTIFY_RATE_LIMIT": "1000000",
        },
    )
    await stack.start()
    ports = {name: int(stack.services[name].env["TOCSIN_METRICS_PORT"]) for name in BATCH_METRICS}

    async def batches() -> dict[str, float]:
        out = {}
        for service, (metric, labels) in BATCH_METRICS.items():
            out[service] = metric_sum(await scrape(ports[service]), metric, labels)
        return out

    try:
        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                expected = len(stack.pages.requests) + 1
                body = {
                    "routing_key": "recordcount" + "0" * 21,
                    "event_action": "trigger",
                    "dedup_key": uuid.uuid4().hex,
                    "payload": {
                        "summary": "record count",
                        "source": "bench",
                        "severity": "critical",
                    },
                }
                async with session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as answer:
                    if answer.status != 202:
                        raise RuntimeError(
                            f"ingest answered {answer.status}: {await answer.text()}"
                        )
                await stack.pages.wait_for(expected, 30)
                await quiet(bootstrap, settle_s)

            await one()  # warm-up: first connections, consumer positions
            offsets_before, batches_before = await quiet(bootstrap, settle_s), await batches()
            for _ in range(alerts):
                await one()
            offsets_after, batches_after = await quiet(bootstrap, settle_s), await batches()
    finally:
        await stack.stop()
    return report(alerts, offsets_before, offsets_after, batches_before, batches_after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=30)
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds without new records = quiet"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    result = asyncio.run(run(args.alerts, args.settle))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
