"""Rate limit per contact method (pure logic): at most `limit` messages in any sliding
`window_s`. Excess is never dropped: `next_allowed` says when the next message may go, and
the bundle stage holds pages until then and sends them as one message.

The sends are also kept in Redis (`ratelimit_store.py`), so a restart or a rebalance that
moves a person's pages to another replica keeps the limit: before deciding, a replica
`merge`s what Redis holds for the contact method into what it knows itself.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def to_micros(at: datetime) -> int:
    """A send time as integer microseconds since the epoch (exact, as Redis scores keep
    it: below 2**53 for the next few centuries)."""
    return (at - EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return EPOCH + micros * _MICRO


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

    def merge(self, key: str, sent: Iterable[datetime], now: datetime) -> None:
        """Add sends known elsewhere (Redis: this or another replica, before a restart) to
        those of `key` kept here. A send known both here and there counts once: of each
        time, the larger of the two counts is kept."""
        here = Counter(self._trim(key, now))
        there = Counter(t for t in sent if t > now - self.window)
        merged = here | there  # per time, the larger count
        if merged == here:
            return
        self._sent[key] = deque(sorted(merged.elements()))

    def keys(self) -> int:
        """How many contact methods are kept."""
        return len(self._sent)

    def forget_idle(self, now: datetime) -> None:
        """Drop keys with nothing in the window (bounded memory)."""
        for key in [k for k in self._sent if not self._trim(k, now)]:
            del self._sent[key]
