"""Stage 2 — rate limit per contact method: says when the next message to a contact
method may go. Excess is delayed (and bundled by the next stage), never dropped.

With a `RedisRateLimitLog` the sends are shared through Redis: what other replicas, or this
one before a restart, sent to the contact method counts too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.ratelimit_store import RedisRateLimitLog
from tocsin_notification.redis_batch import Commands


class RateLimitStage:
    def __init__(self, policy: BundlePolicy, shared: RedisRateLimitLog | None = None) -> None:
        self.policy = policy
        self.shared = shared

    async def limited_until(self, key: str, now: datetime) -> datetime | None:
        """When the limit (not the bundling window) frees up; None when not limited."""
        if self.shared is not None:
            await self.shared.refresh(key, now)
        return self._until(key, now)

    def read_commands(self, key: str, now: datetime) -> Commands | None:
        """The Redis read `limited_until` needs, for another stage's round trip to carry
        (None: nothing to read); `limited_until_read` decides with its results."""
        return None if self.shared is None else self.shared.read_commands(key, now)

    def limited_until_read(self, key: str, now: datetime, results: list[Any]) -> datetime | None:
        """`limited_until` with the results of `read_commands(key, now)`."""
        if self.shared is not None:
            self.shared.merge(key, now, results)
        return self._until(key, now)

    def _until(self, key: str, now: datetime) -> datetime | None:
        at = self.policy.limit.next_allowed(key, now)
        return at if at > now else None
