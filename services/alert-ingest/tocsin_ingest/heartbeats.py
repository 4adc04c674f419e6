"""Heartbeat monitors (domain; storage behind HeartbeatStore, time behind a Clock).

A monitor expects a ping every ``interval``. Its deadline is the last ping (or the moment
the monitor was first seen) plus interval plus grace. A periodic check claims every
deadline that passed and triggers one alert on the monitor's service (dedup key
``heartbeat:<id>``); the next ping resolves it.

Exactly once across replicas: the store's claim is atomic (Redis: a Lua script that
moves the expired deadline to the claim's lease and marks the monitor down), so of several
replicas checking the same expiry exactly one wins; likewise only one ping sees "was down"
and resolves.

A claim is a lease, not a removal: its deadline is pushed CLAIM_LEASE_S ahead and removed
only once the alert is published (`confirm`). A replica killed between the two leaves the
leased deadline behind, and once it passes the monitor is claimed and triggered again:
at least once, which correlation's dedup (one open alert per dedup key) turns into once.
Removing the deadline at the claim, as this did before, lost the alert with the replica.

A ping from outside must carry the monitor's secret (ping_urls): ``authenticated_ping``
refuses an unknown monitor, one whose URL was never issued and a wrong secret alike, and a
refused ping changes nothing (its missed-heartbeat alert still fires).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from tocsin.v1 import alert_pb2
from tocsin_common.clock import Clock
from tocsin_common.config import Heartbeat, TocsinConfig
from tocsin_common.timeutil import set_timestamp

from tocsin_ingest import ping_urls
from tocsin_ingest.fields import SEVERITIES

log = logging.getLogger("tocsin.ingest.heartbeats")

SOURCE = "tocsin-heartbeat"
# Long enough for a publish that waits out a broker's brief failover; a claim held longer
# (its replica hung or dead) is taken over and its alert triggered again.
CLAIM_LEASE_S = 30.0
MAX_ID_LENGTH = 100  # longer is no configured id (config ids are slugs): refused unread


def dedup_key(monitor_id: str) -> str:
    return f"heartbeat:{monitor_id}"


class HeartbeatStore(Protocol):
    """Shared state of all monitors; every method is atomic."""

    async def arm(self, deadlines: dict[str, float]) -> None:
        """Give each monitor that has no deadline and is not down this deadline."""

    async def ping(self, monitor_id: str, deadline: float, at: float) -> bool:
        """Set the monitor's next deadline and its last ping (``at``); True if it was down
        (only one caller sees it)."""

    async def status(self, monitor_ids: Iterable[str]) -> dict[str, MonitorStatus]:
        """The last ping and whether the alert fires, of each of ``monitor_ids``."""

    async def claim_expired(
        self, now: float, known: Iterable[str], lease_until: float
    ) -> list[str]:
        """Move every deadline of ``known`` at or before ``now`` to ``lease_until`` and mark
        those monitors down; returns them. Of concurrent callers, each monitor goes to
        exactly one (until the lease runs out)."""

    async def confirm(self, monitor_id: str, lease_until: float) -> None:
        """The claim's alert is published: drop the leased deadline (a deadline a ping set
        since then stays)."""

    async def unclaim(self, monitor_id: str, deadline: float) -> None:
        """Undo a claim whose alert could not be published (it will be claimed again)."""

    async def mark_down(self, monitor_id: str) -> None:
        """Undo a ping's recovery whose resolve could not be published."""


@dataclass(frozen=True)
class MonitorStatus:
    last_ping: datetime | None  # None: no ping since the monitor was set up
    down: bool  # its missed-heartbeat alert fires


class PingRefused(Exception):
    """An unknown monitor, no ping URL issued, or a wrong secret: told apart by no one."""


@dataclass(frozen=True)
class PingResult:
    monitor: Heartbeat
    resolved: bool  # the monitor was down and this ping resolved its alert
    next_deadline: datetime


Publish = Callable[[list[alert_pb2.Alert]], Awaitable[None]]


def deadline_after(monitor: Heartbeat, at: datetime) -> datetime:
    return at + monitor.interval + monitor.grace


def missed_alert(monitor: Heartbeat, now: datetime) -> alert_pb2.Alert:
    alert = _alert(monitor, now, alert_pb2.ALERT_ACTION_TRIGGER)
    alert.summary = monitor.alert_summary
    alert.severity = SEVERITIES[monitor.severity]
    return alert


def recovered_alert(monitor: Heartbeat, now: datetime) -> alert_pb2.Alert:
    alert = _alert(monitor, now, alert_pb2.ALERT_ACTION_RESOLVE)
    alert.summary = f"Heartbeat {monitor.id} checked in again"
    alert.severity = SEVERITIES[monitor.severity]
    return alert


def _alert(
    monitor: Heartbeat, now: datetime, action: alert_pb2.AlertAction.ValueType
) -> alert_pb2.Alert:
    alert = alert_pb2.Alert(
        event_id=str(uuid.uuid4()),
        service_id=monitor.service,
        dedup_key=dedup_key(monitor.id),
        action=action,
        source=SOURCE,
        component=monitor.id,
        source_format=alert_pb2.SOURCE_FORMAT_HEARTBEAT,
    )
    setattr(alert, "class", "heartbeat")
    alert.labels["heartbeat"] = monitor.id
    alert.details.update(
        {
            "heartbeat": monitor.id,
            "interval_seconds": monitor.interval.total_seconds(),
            "grace_seconds": monitor.grace.total_seconds(),
        }
    )
    set_timestamp(alert.source_time, now)
    set_timestamp(alert.received_time, now)
    return alert


class HeartbeatMonitors:
    """Pings and the periodic check of every configured monitor."""

    def __init__(
        self,
        config: Callable[[], TocsinConfig],
        store: HeartbeatStore,
        publish: Publish,
        clock: Clock,
        *,
        check_every: float = 0.5,
    ) -> None:
        self._config = config
        self._store = store
        self._publish = publish
        self._clock = clock
        self._check_every = check_every

    def monitor(self, monitor_id: str) -> Heartbeat:
        """The configured monitor; KeyError when there is none."""
        return self._config().heartbeat(monitor_id)

    async def authenticated_ping(
        self, monitor_id: str, secret: str, secrets: ping_urls.PingSecretStore
    ) -> PingResult:
        """A ping with the monitor's secret; PingRefused (and nothing recorded) when the
        monitor is unknown, has no ping URL or ``secret`` is not its secret."""
        if len(monitor_id) > MAX_ID_LENGTH:
            raise PingRefused(monitor_id)
        stored = await secrets.get(monitor_id)  # looked up for any id: alike in time
        if not ping_urls.accepts(stored, secret, self._clock.now()):
            raise PingRefused(monitor_id)
        try:
            return await self.ping(monitor_id)
        except KeyError:  # a URL issued for a monitor since removed from the config
            raise PingRefused(monitor_id) from None

    async def ping(self, monitor_id: str) -> PingResult:
        """Record a ping; resolves the monitor's alert if it was down. KeyError if unknown.
        Unauthenticated: the HTTP front door calls ``authenticated_ping``."""
        monitor = self.monitor(monitor_id)
        now = self._clock.now()
        deadline = deadline_after(monitor, now)
        was_down = await self._store.ping(monitor.id, deadline.timestamp(), now.timestamp())
        if was_down:
            try:
                await self._publish([recovered_alert(monitor, now)])
            except BaseException:
                await self._store.mark_down(monitor.id)
                raise
            log.info("heartbeat recovered", extra={"heartbeat": monitor.id})
        return PingResult(monitor, was_down, deadline)

    async def check(self) -> list[str]:
        """Arm new monitors, then trigger every one whose deadline passed (claimed here)."""
        config = self._config()
        now = self._clock.now()
        monitors = {m.id: m for m in config.heartbeats}
        if not monitors:
            return []
        await self._store.arm({m.id: deadline_after(m, now).timestamp() for m in monitors.values()})
        lease_until = now.timestamp() + CLAIM_LEASE_S
        claimed = await self._store.claim_expired(now.timestamp(), monitors, lease_until)
        if not claimed:
            return []
        alerts = [missed_alert(monitors[i], now) for i in claimed]
        try:
            await self._publish(alerts)
        except BaseException:
            retry_at = (now - timedelta(seconds=1)).timestamp()
            for monitor_id in claimed:
                await self._store.unclaim(monitor_id, retry_at)
            raise
        for monitor_id in claimed:
            await self._store.confirm(monitor_id, lease_until)
            log.warning("heartbeat missed", extra={"heartbeat": monitor_id})
        return claimed

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``check_every`` seconds until ``stop``; failures are retried."""
        while not stop.is_set():
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat check failed; retrying")
            await self._clock.sleep(self._check_every)
