"""The heartbeat store's Lua scripts on the real Redis: a claim is a lease, so a replica
killed between claiming a missed heartbeat and publishing its alert does not lose it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from tocsin.v1 import alert_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import parse_config
from tocsin_ingest.heartbeats import CLAIM_LEASE_S, HeartbeatMonitors
from tocsin_ingest.redis_state import RedisHeartbeatStore

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
