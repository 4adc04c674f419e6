"""Stage 5 — send: one attempt through the channel's provider, bounded by the per-attempt
timeout and guarded by the endpoint's circuit breaker."""

from __future__ import annotations

import asyncio

from tocsin_notification.breaker import BreakerRegistry, endpoint_of
from tocsin_notification.providers.base import DeliveryError, Page, Provider


class SendStage:
    def __init__(self, breakers: BreakerRegistry, attempt_timeout_s: float) -> None:
        self.breakers = breakers
        self._timeout = attempt_timeout_s

    async def send(self, provider: Provider, page: Page) -> str:
        endpoint = endpoint_of(page.address)
        breaker = self.breakers.for_endpoint(endpoint)
        if not breaker.allow():
            raise DeliveryError(
                f"circuit open for {endpoint} until {breaker.retry_at()}", retryable=True
            )
        try:
            receipt = await asyncio.wait_for(provider.send(page), self._timeout)
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
