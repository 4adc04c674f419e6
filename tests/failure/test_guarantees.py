"""SPEC §9 under failure, as a story:

every service runs as two replicas, as a scaled-out deployment does, and the load goes to
both ingest replicas. While alerts keep arriving, one replica of each service in turn —
then Redis, then the Kafka broker — is killed with SIGKILL and started again. Afterwards
every alert that was answered 202 is in an incident (a dead letter does not count: an
accepted alert is one the pipeline can process, and these are all valid), every incident
paged its on-call person, and nobody was paged twice about the same alert (bundled
messages count each alert they list).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from tocsin.v1 import alert_pb2, incident_pb2

from tests.integration.harness import ROOT, Stack

pytestmark = pytest.mark.integration

ROUTING_KEY = "guarantees0000000000000000000001"
RATE_PER_S = float(os.environ.get("TOCSIN_FAILURE_RATE", "20"))
SECONDS_BETWEEN_CRASHES = float(os.environ.get("TOCSIN_FAILURE_GAP_SECONDS", "3"))


class SteadyLoad:
    """Sends one new alert every 1/rate seconds, to each URL in turn; remembers which were
    answered 202."""

    def __init__(self, urls: list[str], rate: float) -> None:
        self._urls = itertools.cycle(urls)
        self._rate = rate
        self.accepted: set[str] = set()
        self.accepted_at: dict[str, float] = {}
        self.refused = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task:
            await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            in_flight: set[asyncio.Task[None]] = set()
            while not self._stopping.is_set():
                task = asyncio.create_task(self._one(session))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                await asyncio.sleep(1 / self._rate)
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession) -> None:
        key = f"guard-{uuid.uuid4().hex[:12]}"
        body = {
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {
                "summary": f"guarded {key}",
                "source": "failure-suite",
                "severity": "critical",
            },
        }
        try:
            async with session.post(f"{next(self._urls)}/v2/enqueue", json=body) as response:
                await response.read()
                if response.status == 202:
                    self.accepted.add(key)
                    self.accepted_at[key] = time.monotonic()
                else:
                    self.refused += 1
        except (aiohttp.ClientError, TimeoutError):
            self.refused += 1  # not acknowledged: the sender knows to retry


def crash(component: str) -> None:
    """SIGKILL Kafka or Redis of the stack `make test` started, and start it again."""
    profile = os.environ.get("TOCSIN_DEVSTACK_PROFILE", "test")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "devstack.py"),
            "crash",
            component,
            "--profile",
            profile,
        ],
        check=True,
        cwd=ROOT,
    )


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return values
            for records in batch.values():
                values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()


async def normalized_positions(bootstrap: str, keys: set[str]) -> dict[str, tuple[int, int]]:
    """Where (partition, offset) each of these alerts sits on alerts.normalized."""
    consumer = AIOKafkaConsumer(
        "alerts.normalized",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, tuple[int, int]] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return found
            for records in batch.values():
                for record in records:
                    alert = alert_pb2.Alert()
                    alert.ParseFromString(record.value or b"")
                    if alert.dedup_key in keys:
                        found[alert.dedup_key] = (record.partition, record.offset)
    finally:
        await consumer.stop()


async def keys_in_incidents(bootstrap: str) -> set[str]:
    keys: set[str] = set()
    for value in await read_topic(bootstrap, "incidents.events"):
        event = incident_pb2.IncidentEvent()
        try:
            event.ParseFromString(value)
        except DecodeError:
            # A record no service could read (test_insight_stories puts one there to check
            # it is dead-lettered): not an incident of this suite's alerts.
            continue
        keys.update(k for k in event.incident.dedup_keys if k.startswith("guard-"))
    return keys


async def guarded_incidents(bootstrap: str, keys: set[str]) -> set[str]:
    """The ids of the incidents of these alerts (from their TRIGGERED events)."""
    ids: set[str] = set()
    for value in await read_topic(bootstrap, "incidents.events"):
        event = incident_pb2.IncidentEvent()
        try:
            event.ParseFromString(value)
        except DecodeError:
            continue
        if event.type == incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED and any(
            k in keys for k in event.incident.dedup_keys
        ):
            ids.add(event.incident.incident_id)
    return ids


async def timelines(
    redis_url: str, incident_ids: list[str]
) -> list[list[incident_pb2.IncidentEvent]]:
    """Each incident's timeline as escalation's projection holds it."""
    redis = Redis.from_url(redis_url)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for incident_id in incident_ids:
                pipe.lrange(f"tocsin:incident:{incident_id}:timeline", 0, -1)
            found = await pipe.execute()
    finally:
        await redis.aclose()
    return [[incident_pb2.IncidentEvent.FromString(raw) for raw in raws] for raws in found]


async def keys_in_dead_letters(bootstrap: str) -> set[str]:
    keys: set[str] = set()
    for value in await read_topic(bootstrap, "alerts.deadletter"):
        letter = alert_pb2.DeadLetter()
        letter.ParseFromString(value)
        alert = alert_pb2.Alert()
        try:
            alert.ParseFromString(letter.original_value)
        except Exception:
            continue
        if alert.dedup_key.startswith("guard-"):
            keys.add(alert.dedup_key)
    return keys


def gina_pages(stack: Stack) -> list[list[str]]:
    """For every message gina received, the alert keys it paged her about (one, or several
    when a burst was bundled into one message)."""
    messages = []
    for request in stack.pages.requests:
        if request.path == "/pages/gina":
            body = request.json()
            incidents = body.get("incidents") or [body["incident"]]
            messages.append([i["title"].rsplit(" ", 1)[-1] for i in incidents])
    return messages


async def test_no_accepted_alert_is_lost_and_nobody_is_paged_twice_across_crashes(
    stack: Stack, report: Callable[[str], None]
) -> None:
    for service in ("alert-ingest", "correlation", "escalation", "notification"):
        await stack.add_replica(service)
    load = SteadyLoad([stack.ingest_url, stack.http_url("alert-ingest-2")], RATE_PER_S)
    load.start()
    crashed = []
    started = time.monotonic()
    crash_times: list[str] = []
    try:
        for service in ("alert-ingest", "correlation", "escalation", "notification"):
            await asyncio.sleep(SECONDS_BETWEEN_CRASHES)
            crash_times.append(f"{service} {time.monotonic() - started:.1f}s")
            await stack.restart(service)
            crashed.append(service)
        for component in ("redis", "kafka"):
            await asyncio.sleep(SECONDS_BETWEEN_CRASHES)
            crash_times.append(f"{component} {time.monotonic() - started:.1f}s")
            await asyncio.to_thread(crash, component)
            crashed.append(component)
        await asyncio.sleep(SECONDS_BETWEEN_CRASHES)
    finally:
        await load.stop()

    accepted = load.accepted
    # Everything accepted must come out the other end; give the pipeline time to drain
    # (a killed faust worker's partitions move after its 10 s session times out; a page a
    # killed notification worker had claimed waits out the claim's 30 s lease).
    deadline = time.monotonic() + 150
    while True:
        in_incidents = await keys_in_incidents(stack.bootstrap)
        dead = await keys_in_dead_letters(stack.bootstrap)
        paged = {alert for message in gina_pages(stack) for alert in message}
        missing = accepted - in_incidents
        unpaged = (accepted & in_incidents) - paged
        if (not missing and not unpaged) or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)

    messages = gina_pages(stack)
    times_paged = collections.Counter(alert for message in messages for alert in message)
    repeats = {alert: n for alert, n in times_paged.items() if n > 1}
    report(
        f"\nfailure suite (two replicas of each service): crashed {', '.join(crashed)}; "
        f"accepted {len(accepted)}, "
        f"refused {load.refused}, in incidents {len(accepted & in_incidents)}, "
        f"dead-lettered {len(accepted & dead)}, paged {len(accepted & paged)}, "
        f"messages {len(messages)}, alerts paged twice {len(repeats)}"
    )
    assert len(accepted) > RATE_PER_S * SECONDS_BETWEEN_CRASHES  # the load really ran
    if missing:  # say where each lost alert was, to tell which crash lost it
        positions = await normalized_positions(stack.bootstrap, missing)
        where = {
            key: (
                f"accepted {load.accepted_at[key] - started:.1f}s, "
                f"alerts.normalized {positions.get(key, 'absent')}"
            )
            for key in sorted(missing)
        }
        report(f"crashes at {crash_times}; missing {where}")
    assert accepted & dead == set(), f"{len(accepted & dead)} accepted alerts dead-lettered"
    assert missing == set(), f"{len(missing)} accepted alerts in no incident"
    assert unpaged == set(), f"{len(unpaged)} incidents never paged"
    if repeats:  # tell a retried delivery (same Idempotency-Key) from a second page
        keys_of: dict[str, list[str]] = collections.defaultdict(list)
        for request in stack.pages.requests:
            if request.path != "/pages/gina":
                continue
            body = request.json()
            for incident in body.get("incidents") or [body["incident"]]:
                alert = incident["title"].rsplit(" ", 1)[-1]
                if alert in repeats:
                    keys_of[alert].append(request.headers.get("Idempotency-Key", "?"))
        report(f"crashes at {crash_times}; paged twice, by Idempotency-Key: {dict(keys_of)}")
    assert repeats == {}, f"alerts paged more than once: {repeats}"

    # The timeline across the crashes: escalation's level entry and notification's outcome
    # entries reach it without correlation, each once whatever was replayed or redelivered.
    ids = sorted(await guarded_incidents(stack.bootstrap, accepted))
    found = await timelines(stack.redis_url, ids)
    E = incident_pb2
    escalated = [sum(e.type == E.INCIDENT_EVENT_TYPE_ESCALATED for e in t) for t in found]
    delivered = sum(
        any(
            e.type == E.INCIDENT_EVENT_TYPE_NOTIFIED and e.message.startswith("Notified") for e in t
        )
        for t in found
    )
    repeated = {
        ids[n]: [e.event_id for e in t if [x.event_id for x in t].count(e.event_id) > 1]
        for n, t in enumerate(found)
        if len({e.event_id for e in t}) != len(t)
    }
    report(
        f"timelines: {len(ids)} incidents, with their level entry {escalated.count(1)}, "
        f"with a delivered entry {delivered}, with an entry twice {len(repeated)}"
    )
    assert repeated == {}, f"timeline entries applied twice: {repeated}"
    wrong = {ids[n]: c for n, c in enumerate(escalated) if c != 1}
    assert wrong == {}, f"incidents without exactly one level entry: {wrong}"
    # Every entry carries the incident as it was once applied.
    assert all(e.incident.incident_id == ids[n] for n, t in enumerate(found) for e in t)
