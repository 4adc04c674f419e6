"""Circuit breaker per endpoint (pure logic, injected clock).

closed: attempts pass; `failure_threshold` consecutive failures open it.
open: attempts fail fast without touching the endpoint, until `reset_timeout_s` passed.
half-open: one probe passes; its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from tocsin_common.clock import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self, clock: Clock, *, failure_threshold: int = 5, reset_timeout_s: float = 30.0
    ) -> None:
        self._clock = clock
        self._threshold = failure_threshold
        self._reset = timedelta(seconds=reset_timeout_s)
        self._failures = 0
        self._opened_at: datetime | None = None
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.now() - self._opened_at >= self._reset:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_at(self) -> datetime | None:
        """When an open breaker lets a probe through (None when not open)."""
        return None if self._opened_at is None else self._opened_at + self._reset

    def allow(self) -> bool:
        """May an attempt go to the endpoint now? In half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_out = False

    def record_failure(self) -> None:
        self._probe_out = False
        if self._opened_at is not None:  # a failed probe: open again, for a full period
            self._opened_at = self._clock.now()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._opened_at = self._clock.now()


def endpoint_of(address: str) -> str:
    """The endpoint a breaker guards: scheme://host:port of a URL, else the address's
    domain (email) or the whole address."""
    parts = urlsplit(address)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}".lower()
    if "@" in address:
        return address.rsplit("@", 1)[1].lower()
    return address


class BreakerRegistry:
    """One breaker per endpoint, created on first use."""

    def __init__(
        self, clock: Clock, *, failure_threshold: int = 5, reset_timeout_s: float = 30.0
    ) -> None:
        self._clock = clock
        self._threshold = failure_threshold
        self._reset_s = reset_timeout_s
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_endpoint(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(
                self._clock, failure_threshold=self._threshold, reset_timeout_s=self._reset_s
            )
        return breaker
