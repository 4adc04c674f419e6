"""Heartbeat monitors as a state machine, on a FakeClock and an in-memory store with the
same atomic semantics as the Redis one (claims and recoveries go to exactly one caller)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from tocsin.v1 import alert_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_ingest import ping_urls
from tocsin_ingest.heartbeats import (
    CLAIM_LEASE_S,
    HeartbeatMonitors,
    MonitorStatus,
    PingRefused,
)

CONFIG = """
version: 1
services:
  - id: batch
    name: Batch jobs
    escalation_policy: p
escalation_policies:
  - id: p
    name: P
    levels: [{delay: 5m, targets: [{type: user, id: u}]}]
users:
  - {id: u, name: U, email: u@example.com}
heartbeats:
  - {id: nightly-backup, service: batch, interval: 60s, grace: 30s,
     summary: "Nightly backup did not report", severity: error}
  - {id: cron, service: batch, interval: 10s}
"""


def load() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


class MemoryHeartbeatStore:
    """The HeartbeatStore contract in memory; each method runs without awaiting, so it is
    atomic under asyncio exactly as a Lua script is in Redis."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}
        self.down: set[str] = set()
        self.last_ping: dict[str, float] = {}

    async def arm(self, deadlines: dict[str, float]) -> None:
        for monitor_id, deadline in deadlines.items():
            if monitor_id not in self.down:
                self.deadlines.setdefault(monitor_id, deadline)

    async def ping(self, monitor_id: str, deadline: float, at: float) -> bool:
        self.deadlines[monitor_id] = deadline
        self.last_ping[monitor_id] = at
        if monitor_id in self.down:
            self.down.discard(monitor_id)
            return True
        return False

    async def claim_expired(
        self, now: float, known: Iterable[str], lease_until: float
    ) -> list[str]:
        claimed = []
        for monitor_id in sorted(set(known)):
            deadline = self.deadlines.get(monitor_id)
            if deadline is not None and deadline <= now:
                self.deadlines[monitor_id] = lease_until
                self.down.add(monitor_id)
                claimed.append(monitor_id)
        return claimed

    async def confirm(self, monitor_id: str, lease_until: float) -> None:
        if self.deadlines.get(monitor_id) == lease_until:
            del self.deadlines[monitor_id]

    async def unclaim(self, monitor_id: str, deadline: float) -> None:
        self.down.discard(monitor_id)
        self.deadlines[monitor_id] = deadline

    async def mark_down(self, monitor_id: str) -> None:
        self.deadlines.pop(monitor_id, None)
        self.down.add(monitor_id)

    async def status(self, monitor_ids: Iterable[str]) -> dict[str, MonitorStatus]:
        return {
            m: MonitorStatus(
                datetime.fromtimestamp(self.last_ping[m], UTC) if m in self.last_ping else None,
                m in self.down,
            )
            for m in monitor_ids
        }


class MemoryPingSecrets:
    """The PingSecretStore contract in memory."""

    def __init__(self) -> None:
        self.records: dict[str, ping_urls.PingSecret] = {}
        self.looked_up: list[str] = []

    async def get(self, heartbeat_id: str) -> ping_urls.PingSecret | None:
        self.looked_up.append(heartbeat_id)
        return self.records.get(heartbeat_id)

    async def put(self, heartbeat_id: str, record: ping_urls.PingSecret) -> None:
        self.records[heartbeat_id] = record


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[alert_pb2.Alert] = []
        self.fail = False

    async def __call__(self, alerts: list[alert_pb2.Alert]) -> None:
        if self.fail:
            raise ConnectionError("kafka is down")
        self.alerts.extend(alerts)

    def actions(self) -> list[tuple[str, int]]:
        return [(a.dedup_key, a.action) for a in self.alerts]


TRIGGER = alert_pb2.ALERT_ACTION_TRIGGER
RESOLVE = alert_pb2.ALERT_ACTION_RESOLVE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def monitors(
    clock: FakeClock, store: MemoryHeartbeatStore, published: Recorder
) -> HeartbeatMonitors:
    config = load()
    return HeartbeatMonitors(lambda: config, store, published, clock)


async def test_a_missed_interval_plus_grace_triggers_once_and_the_next_ping_resolves(
    clock: FakeClock,
) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    await hb.ping("nightly-backup")
    await hb.ping("cron")
    clock.advance(9.9)
    assert await hb.check() == []
    clock.advance(0.1)
    assert await hb.check() == ["cron"]  # 10 s interval, no grace
    clock.advance(79)
    assert await hb.check() == []  # 60 s interval + 30 s grace not over yet
    clock.advance(1)
    assert await hb.check() == ["nightly-backup"]
    clock.advance(300)
    assert await hb.check() == []  # missed once, triggered once
    alert = published.alerts[1]
    assert alert.dedup_key == "heartbeat:nightly-backup"
    assert alert.action == TRIGGER
    assert alert.service_id == "batch"
    assert alert.summary == "Nightly backup did not report"
    assert alert.severity == alert_pb2.SEVERITY_ERROR
    assert alert.source_format == alert_pb2.SOURCE_FORMAT_HEARTBEAT
    assert published.alerts[0].dedup_key == "heartbeat:cron"
    assert published.alerts[0].severity == alert_pb2.SEVERITY_CRITICAL
    assert published.alerts[0].summary == "Heartbeat cron did not check in"

    result = await hb.ping("nightly-backup")
    assert result.resolved
    assert result.next_deadline == clock.now() + timedelta(seconds=90)
    assert published.actions()[-1] == ("heartbeat:nightly-backup", RESOLVE)
    assert not (await hb.ping("nightly-backup")).resolved  # only the first ping resolves
    assert len(published.alerts) == 3


async def test_a_monitor_never_pinged_is_missed_one_interval_after_it_was_first_seen(
    clock: FakeClock,
) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    assert await hb.check() == []
    clock.advance(10)
    assert await hb.check() == ["cron"]


async def test_of_several_replicas_checking_the_same_expiry_exactly_one_triggers(
    clock: FakeClock,
) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    replicas = [monitors(clock, store, published) for _ in range(5)]
    await replicas[0].ping("cron")
    await replicas[0].ping("nightly-backup")
    clock.advance(95)
    claims = await asyncio.gather(*(r.check() for r in replicas))
    assert sorted(m for c in claims for m in c) == ["cron", "nightly-backup"]
    assert len(published.alerts) == 2
    # ... and of several pings after it, exactly one resolves.
    results = await asyncio.gather(*(r.ping("cron") for r in replicas))
    assert sum(r.resolved for r in results) == 1
    assert published.actions().count(("heartbeat:cron", RESOLVE)) == 1


async def test_a_trigger_that_could_not_be_published_is_claimed_again(clock: FakeClock) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    await hb.ping("cron")
    clock.advance(11)
    published.fail = True
    with pytest.raises(ConnectionError):
        await hb.check()
    published.fail = False
    assert "cron" in await hb.check()
    assert published.actions() == [("heartbeat:cron", TRIGGER)]


async def test_a_replica_killed_between_claim_and_publish_leaves_the_alert_to_another(
    clock: FakeClock,
) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    survivor = monitors(clock, store, published)
    await survivor.ping("cron")
    clock.advance(11)
    # What another replica's check() does up to its publish, where SIGKILL stops it.
    now = clock.now().timestamp()
    assert await store.claim_expired(now, ["cron"], now + CLAIM_LEASE_S) == ["cron"]
    assert await survivor.check() == []  # the claim's lease holds
    clock.advance(CLAIM_LEASE_S - 1)
    assert await survivor.check() == []
    clock.advance(1)
    assert await survivor.check() == ["cron"]  # the lease ran out: claimed and triggered
    assert published.actions() == [("heartbeat:cron", TRIGGER)]
    clock.advance(3600)
    assert "cron" not in await survivor.check()  # published and confirmed: once
    assert published.actions().count(("heartbeat:cron", TRIGGER)) == 1
    assert (await survivor.ping("cron")).resolved


async def test_a_ping_between_claim_and_confirm_keeps_its_deadline(clock: FakeClock) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    await hb.ping("cron")
    clock.advance(11)
    now = clock.now().timestamp()
    await store.claim_expired(now, ["cron"], now + CLAIM_LEASE_S)
    assert (await hb.ping("cron")).resolved  # the claim marked it down
    await store.confirm("cron", now + CLAIM_LEASE_S)  # the claim's alert went out
    clock.advance(10)
    assert await hb.check() == ["cron"]  # the ping's deadline was kept, and it passed


async def test_a_resolve_that_could_not_be_published_is_sent_on_the_next_ping(
    clock: FakeClock,
) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    await hb.check()
    clock.advance(11)
    assert await hb.check() == ["cron"]
    published.fail = True
    with pytest.raises(ConnectionError):
        await hb.ping("cron")
    published.fail = False
    assert (await hb.ping("cron")).resolved
    assert published.actions() == [("heartbeat:cron", TRIGGER), ("heartbeat:cron", RESOLVE)]


async def test_an_unknown_monitor_is_a_key_error(clock: FakeClock) -> None:
    hb = monitors(clock, MemoryHeartbeatStore(), Recorder())
    with pytest.raises(KeyError):
        await hb.ping("nope")


async def test_the_periodic_task_checks_on_the_injected_clock(clock: FakeClock) -> None:
    store, published = MemoryHeartbeatStore(), Recorder()
    hb = monitors(clock, store, published)
    stop = asyncio.Event()
    task = asyncio.create_task(hb.run(stop))
    for _ in range(30):  # 15 s of fake time in 0.5 s ticks, no real sleeping
        await asyncio.sleep(0)
        clock.advance(0.5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert published.actions() == [("heartbeat:cron", TRIGGER)]
    stop.set()
    clock.advance(1)
    await asyncio.wait_for(task, 1)


# --- pings need the monitor's secret ---------------------------------------------------------


def issue(
    secrets: MemoryPingSecrets,
    clock: FakeClock,
    monitor_id: str,
    previous_valid_for: timedelta = timedelta(0),
) -> str:
    secret = ping_urls.new_secret()
    secrets.records[monitor_id] = ping_urls.rotated(
        secrets.records.get(monitor_id), secret, clock.now(), "max", previous_valid_for
    )
    return secret


async def test_a_ping_with_the_issued_secret_counts_and_resolves(clock: FakeClock) -> None:
    store, published, secrets = MemoryHeartbeatStore(), Recorder(), MemoryPingSecrets()
    hb = monitors(clock, store, published)
    secret = issue(secrets, clock, "cron")
    await hb.check()  # armed
    clock.advance(11)
    assert await hb.check() == ["cron"]
    result = await hb.authenticated_ping("cron", secret, secrets)
    assert result.resolved
    assert published.actions() == [("heartbeat:cron", TRIGGER), ("heartbeat:cron", RESOLVE)]
    status = await store.status(["cron", "nightly-backup"])
    assert status["cron"] == MonitorStatus(clock.now(), False)
    assert status["nightly-backup"] == MonitorStatus(None, False)


async def test_refused_pings_change_nothing_and_cannot_tell_ids_apart(clock: FakeClock) -> None:
    """Without a URL issued, with a wrong secret, for an unknown monitor, with another
    monitor's secret: refused alike, nothing recorded, and the missed alert still fires."""
    store, published, secrets = MemoryHeartbeatStore(), Recorder(), MemoryPingSecrets()
    hb = monitors(clock, store, published)
    backup_secret = issue(secrets, clock, "nightly-backup")
    attempts = [
        ("cron", ping_urls.new_secret()),  # no URL issued for cron
        ("cron", backup_secret),  # another monitor's secret
        ("nightly-backup", ping_urls.new_secret()),  # wrong secret
        ("nightly-backup", backup_secret[:-1]),  # truncated
        ("nightly-backup", ""),
        ("no-such-monitor", ping_urls.new_secret()),
        ("x" * 101, backup_secret),
    ]
    await hb.check()  # armed
    for monitor_id, secret in attempts:
        clock.advance(1)
        with pytest.raises(PingRefused):
            await hb.authenticated_ping(monitor_id, secret, secrets)
    assert store.last_ping == {}
    clock.advance(4)
    assert await hb.check() == ["cron"]  # 11 s after arming: the refused pings did not count
    assert published.actions() == [("heartbeat:cron", TRIGGER)]
    # An unknown id is looked up as a known one is (alike in time); an overlong one is not.
    assert "no-such-monitor" in secrets.looked_up and "x" * 101 not in secrets.looked_up


async def test_a_secret_issued_for_a_monitor_since_removed_is_refused(clock: FakeClock) -> None:
    hb = monitors(clock, MemoryHeartbeatStore(), Recorder())
    secrets = MemoryPingSecrets()
    secret = issue(secrets, clock, "removed-monitor")
    with pytest.raises(PingRefused):
        await hb.authenticated_ping("removed-monitor", secret, secrets)


async def test_rotation_voids_the_old_secret_at_once_or_after_the_overlap(
    clock: FakeClock,
) -> None:
    store, published, secrets = MemoryHeartbeatStore(), Recorder(), MemoryPingSecrets()
    hb = monitors(clock, store, published)
    first = issue(secrets, clock, "cron")
    second = issue(secrets, clock, "cron")  # rotated: the first stops at once
    with pytest.raises(PingRefused):
        await hb.authenticated_ping("cron", first, secrets)
    await hb.authenticated_ping("cron", second, secrets)
    third = issue(secrets, clock, "cron", previous_valid_for=timedelta(minutes=10))
    clock.advance(599)
    await hb.authenticated_ping("cron", second, secrets)  # still inside the overlap
    await hb.authenticated_ping("cron", third, secrets)
    clock.advance(1)
    with pytest.raises(PingRefused):
        await hb.authenticated_ping("cron", second, secrets)
    with pytest.raises(PingRefused):  # only the one previous URL overlaps
        await hb.authenticated_ping("cron", first, secrets)
    await hb.authenticated_ping("cron", third, secrets)
