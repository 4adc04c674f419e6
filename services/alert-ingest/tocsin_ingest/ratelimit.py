"""Per-integration rate limits: the window arithmetic (pure, no I/O).

A sliding-window counter: counts are kept per fixed one-minute window, and the rate at a
moment is the current window's count plus the previous window's count weighted by how much
of the previous window still lies inside the last minute. The Redis adapter
(redis_state.RedisRateLimiter) applies exactly this decision atomically in a Lua script;
this module is the reference the script mirrors, and what answers Retry-After.

Cost is counted in events: an Alertmanager notification of 5 alerts costs 5. A single
request larger than the whole limit is let through when nothing else was counted, so a
big batch can never be refused forever.

Leases: asking Redis once per event costs a round trip per request. Instead a replica
leases a few events' worth of the limit at once (``lease_size``: a fiftieth of the limit,
at least 1, at most 100; a request costing more leases its cost plus a lease less one,
``wanted``) and admits from that local budget (``LocalBudget``) until it is
spent. Leased events are counted in Redis when leased, so the replicas together never
admit more than the limit; what a replica leased and has not used yet is at most one lease,
and only makes the others refuse that many events early. Unused events are dropped when
the window turns (they stay counted in the window they were leased in). A limit under 100
per minute leases one event at a time: exactly the per-request check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Window:
    index: int  # which fixed window (seconds since the epoch // window)
    elapsed: float  # seconds into it


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, at least 1 when refused
    limit: int = 0
    remaining: int = 0


class RateLimiter(Protocol):
    async def admit(self, key: str, limit: int, cost: int) -> Decision: ...


def window_at(now_s: float, window_s: float = WINDOW_SECONDS) -> Window:
    index = math.floor(now_s / window_s)
    return Window(index, now_s - index * window_s)


FLOAT_SLACK = 1e-9


def estimate(previous: float, current: float, elapsed: float, window_s: float) -> float:
    """Events in the sliding window ending now."""
    weight = max(0.0, 1.0 - elapsed / window_s)
    return previous * weight + current


def allows(
    previous: float, current: float, cost: int, limit: int, elapsed: float, window_s: float
) -> bool:
    rate = estimate(previous, current, elapsed, window_s)
    # The weighted count is a float: at the instant retry_after names, it is the limit up
    # to rounding (171 x (1 - 40/60) = 57.00000000000001), which must not refuse again.
    return rate + cost <= limit + FLOAT_SLACK or rate <= 0


def retry_after(
    previous: float, current: float, cost: int, limit: int, elapsed: float, window_s: float
) -> int:
    """Whole seconds until ``cost`` more events fit (at least 1)."""
    room = limit - current - cost
    if room >= 0 and previous > 0:
        # previous * (1 - t / W) <= room  <=>  t >= W * (1 - room / previous)
        wait = window_s * (1.0 - room / previous) - elapsed
    else:
        # Wait for the next window, where today's count becomes the weighted previous one.
        wait = window_s - elapsed
        room_next = limit - cost
        if current > 0 and room_next < current:
            wait += window_s * (1.0 - max(room_next, 0) / current)
    return max(1, math.ceil(wait - 1e-9))


def decide(
    previous: float,
    current: float,
    cost: int,
    limit: int,
    elapsed: float,
    window_s: float = WINDOW_SECONDS,
) -> Decision:
    """Whether ``cost`` more events may pass, given the window counts before them."""
    if allows(previous, current, cost, limit, elapsed, window_s):
        remaining = limit - estimate(previous, current + cost, elapsed, window_s)
        return Decision(True, 0, limit, max(0, math.floor(remaining)))
    return Decision(False, retry_after(previous, current, cost, limit, elapsed, window_s), limit, 0)


LEASE_DIVISOR = 50
MAX_LEASE = 100


def lease_size(limit: int) -> int:
    """Events a replica leases at once for an integration with this per-minute limit."""
    return max(1, min(MAX_LEASE, limit // LEASE_DIVISOR))


def wanted(limit: int, cost: int) -> int:
    """Events to ask for when the local budget cannot pay ``cost``: the cost plus what is
    left of a lease for the requests after it (just the cost when leases are of one)."""
    return cost + lease_size(limit) - 1


def grant(
    previous: float,
    current: float,
    cost: int,
    want: int,
    limit: int,
    elapsed: float,
    window_s: float = WINDOW_SECONDS,
) -> int:
    """Events to lease now for a request of ``cost`` (``want`` >= cost, the lease asked for),
    given the window counts before: 0 when ``cost`` does not fit (the request is refused),
    else between ``cost`` and ``want``, never past the limit (except a lone big request,
    which gets exactly its cost, as ``allows`` lets it through)."""
    rate = estimate(previous, current, elapsed, window_s)
    room = math.floor(limit - rate + 1e-9)
    if cost <= room:
        return min(max(want, cost), room)
    if rate <= 0:
        return cost
    return 0


class LocalBudget:
    """Leased events not yet used, per integration key (pure; no clock, no I/O)."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[int, int]] = {}  # key -> (window index, events left)

    def take(self, key: str, window_index: int, cost: int) -> bool:
        """Spend ``cost`` leased events of this window; False (nothing spent) when short."""
        lease = self._leases.get(key)
        if lease is None or lease[0] != window_index or lease[1] < cost:
            return False
        self._leases[key] = (window_index, lease[1] - cost)
        return True

    def add(self, key: str, window_index: int, events: int) -> None:
        """Add a lease; what is left of an earlier window's lease is dropped."""
        lease = self._leases.get(key)
        left = lease[1] if lease is not None and lease[0] == window_index else 0
        self._leases[key] = (window_index, left + events)

    def left(self, key: str, window_index: int) -> int:
        lease = self._leases.get(key)
        return lease[1] if lease is not None and lease[0] == window_index else 0


def window_keys(integration_key: str, window: Window) -> tuple[str, str]:
    """Redis keys of the current and the previous window's counters."""
    base = f"tocsin:ingest:ratelimit:{integration_key}"
    return f"{base}:{window.index}", f"{base}:{window.index - 1}"
