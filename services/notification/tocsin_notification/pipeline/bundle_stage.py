"""Stage 3 — bundle: pages for one contact method that arrive while it must wait (the
bundling window after a message, or the rate limit) are held and go out together as one
message listing the incidents. A lone page goes at once. With a `RedisRateLimitLog` each
message's send is kept in Redis as it goes (see ratelimit_store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from tocsin_common.clock import Clock

from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.pipeline.job import Job
from tocsin_notification.ratelimit_store import RedisRateLimitLog

SendBatch = Callable[[list[Job]], Awaitable[None]]


@dataclass
class _Held:
    jobs: list[Job] = field(default_factory=list)
    flushing: bool = False


class BundleStage:
    def __init__(
        self, policy: BundlePolicy, clock: Clock, shared: RedisRateLimitLog | None = None
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._shared = shared
        self._held: dict[str, _Held] = {}

    async def submit(self, job: Job, send: SendBatch) -> bool:
        """Send `job` now, or hold it to go with others. Returns True when it was held.
        The job's `done` future is set by `send` either way."""
        key = job.bundle_key
        held = self._held.get(key)
        now = self._clock.now()
        if held is None and self.policy.send_at(key, now) <= now:
            await self._sent(key, now, send([job]))
            return False
        if held is None:
            held = self._held[key] = _Held()
        held.jobs.append(job)
        if not held.flushing:
            held.flushing = True
            asyncio.get_running_loop().create_task(self._flush(key, send))
        return True

    async def _flush(self, key: str, send: SendBatch) -> None:
        while True:
            now = self._clock.now()
            at = self.policy.send_at(key, now)
            if at <= now:
                break
            await self._clock.sleep((at - now).total_seconds())
        held = self._held.pop(key)
        await self._sent(key, self._clock.now(), send(held.jobs))

    async def _sent(self, key: str, at: datetime, sending: Awaitable[None]) -> None:
        """Count a message to `key` and send it. Counted here at once (a page arriving
        meanwhile sees it); kept in Redis while the message goes, not before: the write
        would add a round trip (and the AOF's fsync) to every page's latency, and the count
        is a courtesy to the person, not a guarantee — should this process die between the
        send and the write, the next message after a restart may come one early."""
        self.policy.sent(key, at)
        if self._shared is None:
            await sending
            return
        written = self._shared.record_soon(key, at)
        try:
            await sending
        finally:
            await self._shared.settle(key, written)  # never raises

    def held(self, key: str) -> int:
        held = self._held.get(key)
        return len(held.jobs) if held else 0
