"""Retry policy (pure): how many attempts, how long each may take, how long to wait
between them. Exponential backoff with full jitter (AWS architecture blog, "Exponential
Backoff And Jitter"): wait = uniform(0, min(cap, base * 2 ** (attempt - 1))).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    attempt_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts}: expected at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.attempt_timeout_s <= 0:
            raise ValueError("delays must be >= 0 and attempt_timeout_s > 0")

    def ceiling(self, attempt: int) -> float:
        """The largest wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, attempt - 1)))

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt `attempt` (full jitter)."""
        return rand() * self.ceiling(attempt)

    def should_retry(self, attempt: int, retryable: bool) -> bool:
        return retryable and attempt < self.max_attempts
