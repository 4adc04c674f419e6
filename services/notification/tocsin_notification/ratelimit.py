"""Rate limit per contact method (pure logic): at most `limit` messages in any sliding
`window_s`. Excess is never dropped: `next_allowed` says when the next message may go, and
the bundle stage holds pages until then and sends them as one message.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta


class SlidingWindowLimit:
    def __init__(self, limit: int = 20, window_s: float = 60.0) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window = timedelta(seconds=window_s)
        self._sent: dict[str, deque[datetime]] = {}

    def _trim(self, key: str, now: datetime) -> deque[datetime]:
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        return sent

    def next_allowed(self, key: str, now: datetime) -> datetime:
        """The earliest time (now or later) a message to `key` is within the limit."""
        sent = self._trim(key, now)
        if len(sent) < self.limit:
            return now
        return sent[len(sent) - self.limit] + self.window

    def record(self, key: str, at: datetime) -> None:
        self._trim(key, at).append(at)

    def keys(self) -> int:
        """How many contact methods are kept."""
        return len(self._sent)

    def forget_idle(self, now: datetime) -> None:
        """Drop keys with nothing in the window (bounded memory)."""
        for key in [k for k in self._sent if not self._trim(k, now)]:
            del self._sent[key]
