"""Stage 6 — retry: run attempts until one succeeds, a failure is final (a 4xx), or the
attempts are used up; wait with exponential backoff and full jitter in between."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from tocsin_common.clock import Clock

from tocsin_notification.pipeline.job import Attempt
from tocsin_notification.providers.base import DeliveryError
from tocsin_notification.retry_policy import RetryPolicy


@dataclass
class RetryResult:
    receipt: str | None
    history: list[Attempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return self.receipt is not None

    @property
    def attempts(self) -> int:
        return len(self.history) + (1 if self.delivered else 0)


AttemptFn = Callable[[int], Awaitable[str]]
OnRetry = Callable[[Attempt, float], Awaitable[None]]


class RetryStage:
    def __init__(
        self, policy: RetryPolicy, clock: Clock, rand: Callable[[], float] | None = None
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rand = rand

    async def run(self, attempt_fn: AttemptFn, on_retry: OnRetry | None = None) -> RetryResult:
        history: list[Attempt] = []
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            at: datetime = self._clock.now()
            try:
                receipt = await attempt_fn(attempt)
                return RetryResult(receipt, history)
            except DeliveryError as e:
                failed = Attempt(
                    attempt=attempt,
                    at=at.isoformat(),
                    error=str(e),
                    retryable=e.retryable,
                    duration_ms=int((time.perf_counter() - started) * 1000),
                    endpoint=getattr(e, "endpoint", ""),
                )
                history.append(failed)
                if not self.policy.should_retry(attempt, e.retryable):
                    return RetryResult(None, history)
                wait = (
                    self.policy.backoff(attempt, self._rand)
                    if self._rand
                    else self.policy.backoff(attempt)
                )
                if on_retry is not None:
                    await on_retry(failed, wait)
                await self._clock.sleep(wait)
