"""Stage 2 — rate limit per contact method: says when the next message to a contact
method may go. Excess is delayed (and bundled by the next stage), never dropped."""

from __future__ import annotations

from datetime import datetime

from tocsin_notification.bundling import BundlePolicy


class RateLimitStage:
    def __init__(self, policy: BundlePolicy) -> None:
        self.policy = policy

    def limited_until(self, key: str, now: datetime) -> datetime | None:
        """When the limit (not the bundling window) frees up; None when not limited."""
        at = self.policy.limit.next_allowed(key, now)
        return at if at > now else None
