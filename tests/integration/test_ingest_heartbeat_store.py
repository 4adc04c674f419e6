"""The heartbeat store's Lua scripts on the real Redis: a claim is a lease, so a replica
killed between claiming a missed heartbeat and publishing its alert does not lose it; the
status of a monitor (last ping, down) and the hashes of ping URLs read back as written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from tocsin.v1 import alert_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import parse_config
from tocsin_ingest import ping_urls
from tocsin_ingest.heartbeats import CLAIM_LEASE_S, HeartbeatMonitors, MonitorStatus
from tocsin_ingest.redis_state import RedisHeartbeatStore, RedisPingSecrets

from tests.integration.harness import infra_from_env

CONFIG = parse_config(
    """
version: 1
services:
  - {id: batch, name: Batch jobs, escalation_policy: p}
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: u}]}]}
users:
  - {id: u, name: U, email: u@example.com}
heartbeats:
  - {id: cron, service: batch, interval: 10s}
""",
    "tocsin.yaml",
)


@pytest.fixture
async def store() -> AsyncIterator[RedisHeartbeatStore]:
    _, redis_url = infra_from_env()
    client = Redis.from_url(redis_url)
    try:
        yield RedisHeartbeatStore(client, prefix=f"it:heartbeats:{uuid.uuid4().hex[:8]}")
    finally:
        await client.aclose()


class Published(list[alert_pb2.Alert]):
    async def __call__(self, alerts: list[alert_pb2.Alert]) -> None:
        self.extend(alerts)

    def triggers(self) -> int:
        return sum(a.action == alert_pb2.ALERT_ACTION_TRIGGER for a in self)


async def test_a_claim_left_by_a_killed_replica_is_taken_over_when_its_lease_ends(
    store: RedisHeartbeatStore,
) -> None:
    clock, published = FakeClock(), Published()
    survivor = HeartbeatMonitors(lambda: CONFIG, store, published, clock)
    await survivor.ping("cron")
    clock.advance(11)
    now = clock.now().timestamp()
    # The killed replica's check, up to its publish.
    assert await store.claim_expired(now, ["cron"], now + CLAIM_LEASE_S) == ["cron"]
    assert await survivor.check() == []
    clock.advance(CLAIM_LEASE_S)
    assert await survivor.check() == ["cron"]
    clock.advance(3600)
    assert await survivor.check() == []  # confirmed: the leased deadline is gone
    assert published.triggers() == 1
    assert (await survivor.ping("cron")).resolved


async def test_a_deadline_set_by_a_ping_during_the_claim_survives_its_confirm(
    store: RedisHeartbeatStore,
) -> None:
    clock, published = FakeClock(), Published()
    monitors = HeartbeatMonitors(lambda: CONFIG, store, published, clock)
    await monitors.ping("cron")
    clock.advance(11)
    now = clock.now().timestamp()
    assert await store.claim_expired(now, ["cron"], now + CLAIM_LEASE_S) == ["cron"]
    assert (await monitors.ping("cron")).resolved
    await store.confirm("cron", now + CLAIM_LEASE_S)
    clock.advance(10)
    assert await monitors.check() == ["cron"]


async def test_status_reads_the_last_ping_and_whether_the_alert_fires(
    store: RedisHeartbeatStore,
) -> None:
    clock, published = FakeClock(), Published()
    monitors = HeartbeatMonitors(lambda: CONFIG, store, published, clock)
    assert await store.status(["cron"]) == {"cron": MonitorStatus(None, False)}
    await monitors.ping("cron")
    pinged = clock.now()
    clock.advance(11)
    assert await monitors.check() == ["cron"]
    assert await store.status(["cron", "other"]) == {
        "cron": MonitorStatus(pinged, True),
        "other": MonitorStatus(None, False),
    }


async def test_ping_url_hashes_round_trip_and_a_rotation_replaces_them() -> None:
    _, redis_url = infra_from_env()
    client = Redis.from_url(redis_url)
    prefix = f"it:ping-url:{uuid.uuid4().hex[:8]}:"
    try:
        secrets = RedisPingSecrets(client, prefix=prefix)
        clock = FakeClock()
        assert await secrets.get("cron") is None
        old = ping_urls.new_secret()
        first = ping_urls.rotated(None, old, clock.now(), "max", timedelta(hours=1))
        await secrets.put("cron", first)
        assert await secrets.get("cron") == first
        new = ping_urls.new_secret()
        second = ping_urls.rotated(first, new, clock.now(), "ann")
        await secrets.put("cron", second)
        assert await secrets.get("cron") == second
        stored = await client.hgetall(prefix + "cron")
        assert stored[b"previous_digest"] == b""  # rotated at once: nothing of the old
        assert not any(s.encode() in b"".join(stored.values()) for s in (old, new))
    finally:
        await client.aclose()
