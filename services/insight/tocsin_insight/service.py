"""insight's wiring: settings -> Postgres (migrations, generation) -> consumer and gRPC API;
and the replay that fills a new generation from the topics' beginning."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tocsin.v1 import (
    deploy_gate_service_pb2,
    deploy_gate_service_pb2_grpc,
    insight_service_pb2,
    insight_service_pb2_grpc,
)
from tocsin_common.auth.access import access_control
from tocsin_common.clock import SystemClock
from tocsin_common.config import ConfigStore, TocsinConfig
from tocsin_common.grpcserver import GrpcServer, client_channel
from tocsin_common.kafka import (
    EventProducer,
    client_options,
    ensure_pipeline_topics,
    group_consumer,
    wait_for_kafka,
)
from tocsin_common.runtime import bootstrap, until_stopped
from tocsin_common.settings import Settings
from tocsin_common.transport import KafkaSecurity

from tocsin_insight import gate_retention, rollup, schema, store
from tocsin_insight.db import Conn, pool, wait_for_postgres
from tocsin_insight.domain.interruptions import hour_class
from tocsin_insight.facts import DEFINITION_VERSION, Directory
from tocsin_insight.gate_api import DeployGateServicer
from tocsin_insight.grpc_api import InsightServicer
from tocsin_insight.ingest import TOPICS, FactConsumer
from tocsin_insight.oncall_source import OnCallSource
from tocsin_insight.store import FactStore, Written

SERVICE = "insight"
GROUP_ID = "tocsin-insight"

log = logging.getLogger("tocsin.insight")


def directory_of(config: TocsinConfig) -> Directory:
    teams = {s.id: s.team or "" for s in config.services}
    zones = {u.id: u.time_zone for u in config.users}
    insight = config.insight

    def priority_of(service: str, severity: str, urgency: str, labels: Mapping[str, str]) -> str:
        return insight.priority_for(service, severity, urgency, labels) or ""

    return Directory(
        team_of=lambda service_id: teams.get(service_id, ""),
        zone_of=lambda user_id: zones.get(user_id, "UTC"),
        priority_of=priority_of,
    )


def _number(generation: str) -> int:
    return int(generation[1:])


class ServingCache:
    """The serving generation, read at most once a second (the API's many calls)."""

    def __init__(self, pool: Any, ttl: float = 1.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._value = ""
        self._read_at = 0.0

    async def __call__(self) -> str:
        if self._value and time.monotonic() - self._read_at < self._ttl:
            return self._value
        async with self._pool.connection() as conn:
            found: str | None = await schema.serving(conn)
            self._value = found or ""
        self._read_at = time.monotonic()
        return self._value


async def end_offsets(
    bootstrap: str, security: KafkaSecurity, topics: Iterable[str] = TOPICS
) -> dict[tuple[str, int], int]:
    """Each partition's end offset now (what a new generation must reach)."""
    wanted = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await admin.start()
    try:
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(str(t["topic"]), int(p["partition"]))
        for t in described
        if t["topic"] in wanted
        for p in t["partitions"]
    ]
    missing = set(wanted) - {tp.topic for tp in partitions}
    if missing:
        raise RuntimeError(f"topics without partitions (not created yet?): {sorted(missing)}")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **client_options(security))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


class Completion:
    """Marks a generation complete (and makes it serve, when newer) once it caught up."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._done: set[str] = set()

    async def load(self) -> None:
        cur = await self._conn.execute(
            "SELECT name FROM insight_generations WHERE completed_at IS NOT NULL"
        )
        self._done = {str(r[0]) for r in await cur.fetchall()}

    def complete(self, generation: str) -> bool:
        return generation in self._done

    async def check(self, generation: str, written: Written | None = None) -> bool:
        if generation in self._done:
            return True
        if not await store.caught_up(self._conn, generation):
            return False
        await store.mark_complete(self._conn, generation, datetime.now(UTC))
        self._done.add(generation)
        log.info("generation %s caught up with its topics", generation)
        return True


async def open_database(settings: Settings) -> tuple[Conn, str]:
    """A connection, the schema migrated, and the generation this build writes into."""
    conn = await wait_for_postgres(settings.postgres)
    applied = await schema.migrate(conn)
    log.info("schema: %s", f"applied {applied}" if applied else "up to date")
    built = await rollup.ensure(conn)
    if built:
        log.info("report rollups built for generations %s", built)
    generation = await schema.writer_generation(conn, DEFINITION_VERSION)
    return conn, generation


async def ensure_targets(conn: Conn, generation: str, settings: Settings) -> None:
    cur = await conn.execute(
        "SELECT completed_at IS NULL FROM insight_generations WHERE name = %s", (generation,)
    )
    row = await cur.fetchone()
    if row is None or not row[0]:
        return
    cur = await conn.execute(f"SELECT count(*) FROM insight_{generation}.targets")
    counted = await cur.fetchone()
    if counted is not None and int(counted[0]) > 0:
        return
    ends = await end_offsets(settings.kafka_bootstrap, settings.kafka_security)
    await store.set_targets(conn, generation, ends)


DEFAULT_BATCH_LINGER_MS = 200


def batch_linger_s(env: Mapping[str, str]) -> float:
    """``TOCSIN_INSIGHT_BATCH_LINGER_MS``: how long the live consumer gathers records into
    one PostgreSQL transaction (default 200 ms; 0 writes each poll at once)."""
    raw = env.get("TOCSIN_INSIGHT_BATCH_LINGER_MS", str(DEFAULT_BATCH_LINGER_MS)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"TOCSIN_INSIGHT_BATCH_LINGER_MS: {raw!r} is not a whole number") from None
    if not 0 <= value <= 5000:
        raise ValueError(f"TOCSIN_INSIGHT_BATCH_LINGER_MS: {value} is not within 0..5000")
    return value / 1000


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    access = access_control(settings, config)
    security = settings.kafka_security
    conn, generation = await open_database(settings)
    await wait_for_kafka(settings.kafka_bootstrap, security=security)
    await ensure_pipeline_topics(settings)
    await ensure_targets(conn, generation, settings)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE, security=security)
    await producer.start()
    api_pool = pool(settings.postgres)
    await api_pool.open()
    serving = ServingCache(api_pool)
    completion = Completion(conn)
    await completion.load()

    async def current_generation() -> str:
        # Follows a replay's new generation once it serves (make insight-replay).
        return await schema.writer_generation(conn, DEFINITION_VERSION)

    settled: set[str] = set()

    async def written(gen: str, result: Written) -> None:
        # A generation of this build's definitions that caught up serves, if newer.
        if gen in settled or not await completion.check(gen, result):
            return
        current = await schema.serving(conn)
        if current != gen and _number(gen) > _number(current or "g0"):
            await schema.serve_generation(conn, gen)
            await schema.retire_generations(conn)
        settled.add(gen)

    consumer = FactConsumer(
        group_consumer(settings.kafka_bootstrap, GROUP_ID, SERVICE, security),
        FactStore(conn, directory_of(config.current)),
        current_generation,
        lambda: directory_of(config.current),
        producer,
        on_written=written,
        hour_class=hour_class,
        linger_s=batch_linger_s(os.environ),
    )
    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [
            insight_service_pb2.DESCRIPTOR.services_by_name["InsightService"].full_name,
            deploy_gate_service_pb2.DESCRIPTOR.services_by_name["DeployGateService"].full_name,
        ],
        access,
        settings.tls,
    )
    insight_service_pb2_grpc.add_InsightServiceServicer_to_server(
        InsightServicer(api_pool, serving, config, access), grpc_server.server
    )
    # Who is on call, for the gate's on_call rule: escalation, with insight's credential.
    escalation = client_channel(settings.escalation_grpc, access.credential(), settings.tls)
    deploy_gate_service_pb2_grpc.add_DeployGateServiceServicer_to_server(
        DeployGateServicer(
            api_pool, serving, config, access, on_call=OnCallSource.over(escalation)
        ),
        grpc_server.server,
    )
    await grpc_server.start()
    await consumer.start()
    tasks = [
        asyncio.create_task(consumer.run()),
        asyncio.create_task(config.watch(settings.config_reload_seconds)),
        asyncio.create_task(
            gate_retention.keep_pruned(
                api_pool, lambda: config.current.change_control.decision_retention, SystemClock()
            )
        ),
    ]
    try:
        await consumer.joined.wait()
        await grpc_server.set_serving()
        await until_stopped(stop, tasks)
    finally:
        await grpc_server.stop()
        await escalation.close()
        for task in tasks:
            task.cancel()
        await consumer.stop()
        await producer.stop()
        await api_pool.close()
        await conn.close()
        await access.stop()


async def replay(*, serve_when_done: bool = True, idle_timeout: float = 30.0) -> str:
    """Fill a new generation by replaying the topics from their beginning, while the serving
    one keeps answering; once it reached the end offsets it saw at its start it is marked
    complete and (``serve_when_done``) serves. Its name."""
    settings = Settings.from_env(SERVICE)
    security = settings.kafka_security
    conn = await wait_for_postgres(settings.postgres)
    await schema.migrate(conn)
    await rollup.ensure(conn)
    await schema.ensure_serving(conn, DEFINITION_VERSION)
    await wait_for_kafka(settings.kafka_bootstrap, security=security)
    generation = await schema.create_generation(conn, DEFINITION_VERSION)
    ends = await end_offsets(settings.kafka_bootstrap, security)
    await store.set_targets(conn, generation, ends)
    config = ConfigStore(settings.config_path)
    kafka = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id=f"tocsin-{SERVICE}-replay",
        **client_options(security),
    )

    async def fixed() -> str:
        return generation

    consumer = FactConsumer(
        kafka,
        # The rollup is built whole once the facts are complete (cheaper than per batch).
        FactStore(conn, directory_of(config.current), keep_rollup=False),
        fixed,
        lambda: directory_of(config.current),
        None,
        max_records=5000,
        hour_class=hour_class,
    )
    await consumer.start_assigned(TopicPartition(t, p) for t, p in ends)
    try:
        completion = Completion(conn)
        started = time.monotonic()
        events = 0
        idle_since = time.monotonic()
        while not await completion.check(generation):
            result = await consumer.poll_once(timeout_ms=1000)
            if result is None:
                if time.monotonic() - idle_since > idle_timeout:
                    raise RuntimeError(
                        f"replay into {generation}: no records for {idle_timeout:.0f}s before "
                        "reaching the end offsets it started with"
                    )
                continue
            idle_since = time.monotonic()
            events += result.new_events + result.duplicate_events
        log.info(
            "replayed into %s: %d incident events in %.1fs",
            generation,
            events,
            time.monotonic() - started,
        )
        await rollup.rebuild(conn, generation)
        # Freshly filled: statistics for the planner and the visibility map, before it serves
        # (autovacuum would get there later, meanwhile the first reports pay for it).
        await schema.vacuum_generation(conn, generation)
        if serve_when_done:
            await schema.serve_generation(conn, generation)
            # The one that served before stays (retention of one), older ones go.
            await schema.retire_generations(conn)
    finally:
        await consumer.stop()
        await conn.close()
    return generation
