"""Stage 5 — send: one attempt through the channel's provider, bounded by the per-attempt
timeout and guarded by the endpoint's circuit breaker.

At most `max_per_endpoint` attempts run against one endpoint at a time; the others wait for
a slot *before* their attempt (and its timeout) starts. Under a burst, pages therefore
queue here instead of timing out in the HTTP client's connection queue, which would count
as endpoint failures and open the breaker of an endpoint that is merely busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import lru_cache

from tocsin_notification.breaker import BreakerRegistry, endpoint_of
from tocsin_notification.providers.base import DeliveryError, Page, Provider


class EndpointSlots:
    """A bounded number of concurrent attempts per endpoint."""

    def __init__(self, per_endpoint: int) -> None:
        self.per_endpoint = per_endpoint
        self._slots: dict[str, asyncio.Semaphore] = {}

    def __call__(self, endpoint: str) -> asyncio.Semaphore:
        slots = self._slots.get(endpoint)
        if slots is None:
            slots = self._slots[endpoint] = asyncio.Semaphore(self.per_endpoint)
        return slots


@lru_cache(maxsize=10_000)
def _endpoint(address: str) -> str:
    return endpoint_of(address)


class SendStage:
    def __init__(
        self, breakers: BreakerRegistry, attempt_timeout_s: float, max_per_endpoint: int = 200
    ) -> None:
        self.breakers = breakers
        self._timeout = attempt_timeout_s
        self.slots = EndpointSlots(max_per_endpoint)

    async def send(self, provider: Provider, page: Page) -> str:
        return await self.call(page.address, lambda: provider.send(page))

    async def call(self, address: str, attempt: Callable[[], Awaitable[str]]) -> str:
        """One attempt of any request to ``address`` (a page, an automation action), under
        the endpoint's slots, breaker and the attempt timeout."""
        endpoint = _endpoint(address)
        async with self.slots(endpoint):
            return await self._attempt(endpoint, attempt)

    async def _attempt(self, endpoint: str, attempt: Callable[[], Awaitable[str]]) -> str:
        breaker = self.breakers.for_endpoint(endpoint)
        if not breaker.allow():
            raise DeliveryError(
                f"circuit open for {endpoint} until {breaker.retry_at()}", retryable=True
            )
        try:
            # asyncio.timeout rather than wait_for: no extra task per attempt.
            async with asyncio.timeout(self._timeout):
                receipt = await attempt()
        except TimeoutError:
            breaker.record_failure()
            raise DeliveryError(
                f"no answer within {self._timeout:g}s (attempt timeout)", retryable=True
            ) from None
        except DeliveryError as e:
            # A 4xx is the request's fault, not the endpoint's: it does not trip the breaker.
            if e.retryable:
                breaker.record_failure()
            else:
                breaker.record_success()
            raise
        except Exception as e:  # a provider bug is a failed attempt, not a crashed worker
            breaker.record_failure()
            raise DeliveryError(f"{type(e).__name__}: {e}", retryable=True) from e
        breaker.record_success()
        return receipt
