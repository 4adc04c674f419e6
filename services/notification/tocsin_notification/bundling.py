"""Bundling decisions (pure logic): a burst of pages for one contact method becomes one
message listing the incidents.

The first page goes at once (no added latency for a lone page). Pages arriving within
`window_s` after a message, or while the rate limit is exhausted, are held; at the
earliest moment both allow, everything held goes out as one message.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tocsin_notification.ratelimit import SlidingWindowLimit


class BundlePolicy:
    def __init__(self, limit: SlidingWindowLimit, window_s: float = 2.0) -> None:
        self.limit = limit
        self.window = timedelta(seconds=window_s)
        self._last_sent: dict[str, datetime] = {}
        self._swept_at: datetime | None = None

    def send_at(self, key: str, now: datetime) -> datetime:
        """When the next message to `key` may go: `now` means at once, later means hold."""
        earliest = self.limit.next_allowed(key, now)
        last = self._last_sent.get(key)
        if last is not None and self.window > timedelta(0):
            earliest = max(earliest, last + self.window)
        return max(earliest, now)

    def sent(self, key: str, at: datetime) -> None:
        self._last_sent[key] = at
        self.limit.record(key, at)
        # Once a horizon, idle contact methods are forgotten: the maps hold the ones paged
        # lately, not every one paged since the process started.
        if self._swept_at is None:
            self._swept_at = at
        elif at - self._swept_at >= self._horizon():
            self.forget_idle(at)
            self._swept_at = at

    def _horizon(self) -> timedelta:
        return max(self.window, self.limit.window)

    def forget_idle(self, now: datetime) -> None:
        """Drop what is kept of contact methods with nothing sent within the horizon (their
        next page is decided exactly as if they were kept)."""
        horizon = now - self._horizon()
        for key in [k for k, t in self._last_sent.items() if t <= horizon]:
            del self._last_sent[key]
        self.limit.forget_idle(now)
