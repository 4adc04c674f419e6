"""Which offset of a partition may be committed when records finish out of order (pure).

Records are processed concurrently (and bundled ones wait), so a commit may only cover a
prefix of finished records: the committable offset is one past the highest offset below
which everything has finished.
"""

from __future__ import annotations


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._highest_seen = -1

    def started(self, offset: int) -> None:
        self._pending.add(offset)
        self._highest_seen = max(self._highest_seen, offset)

    def finished(self, offset: int) -> None:
        self._pending.discard(offset)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def committable(self) -> int | None:
        """The offset to commit (next to read), or None when nothing was seen."""
        if self._highest_seen < 0:
            return None
        return min(self._pending) if self._pending else self._highest_seen + 1
