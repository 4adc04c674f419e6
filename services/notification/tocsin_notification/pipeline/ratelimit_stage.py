"""Stage 2 — rate limit per contact method: says when the next message to a contact
method may go. Excess is delayed (and bundled by the next stage), never dropped.

With a `RedisRateLimitLog` the sends are shared through Redis: what other replicas, or this
one before a restart, sent to the contact method counts too."""

from __future__ import annotations

from datetime import datetime

from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.ratelimit_store import RedisRateLimitLog


class RateLimitStage:
    def __init__(self, policy: BundlePolicy, shared: RedisRateLimitLog | None = None) -> None:
        self.policy = policy
        self.shared = shared

    async def limited_until(self, key: str, now: datetime) -> datetime | None:
        """When the limit (not the bundling window) frees up; None when not limited."""
        if self.shared is not None:
            await self.shared.refresh(key, now)
        at = self.policy.limit.next_allowed(key, now)
        return at if at > now else None
