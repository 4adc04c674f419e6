"""Delivery tunables: retries, breaker, rate limit and bundling. Defaults suit a phone;
each can be overridden by an environment variable until the config file has a place for
them (see docs/notifications.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tocsin_notification.retry_policy import RetryPolicy


@dataclass(frozen=True)
class Tuning:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    attempt_timeout_s: float = 10.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    rate_limit: int = 20  # messages per contact method ...
    rate_window_s: float = 60.0  # ... in this sliding window
    bundle_window_s: float = 2.0
    contact_ttl_s: float = 5.0  # how long a looked-up contact method is reused (0: never)
    max_per_endpoint: int = 200  # concurrent attempts against one endpoint
    max_lookups: int = 256  # concurrent contact look-up calls at escalation
    contact_batch: int = 500  # look-ups per call at most (1: one call per look-up)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts, self.base_delay_s, self.max_delay_s, self.attempt_timeout_s
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tuning:
        env = os.environ if env is None else env
        d = cls()

        def num(name: str, default: float) -> float:
            raw = env.get(f"TOCSIN_NOTIFY_{name}", "")
            try:
                return float(raw) if raw else default
            except ValueError:
                raise ValueError(f"TOCSIN_NOTIFY_{name}={raw!r}: expected a number") from None

        return cls(
            max_attempts=int(num("MAX_ATTEMPTS", d.max_attempts)),
            base_delay_s=num("BASE_DELAY_S", d.base_delay_s),
            max_delay_s=num("MAX_DELAY_S", d.max_delay_s),
            attempt_timeout_s=num("ATTEMPT_TIMEOUT_S", d.attempt_timeout_s),
            breaker_threshold=int(num("BREAKER_THRESHOLD", d.breaker_threshold)),
            breaker_reset_s=num("BREAKER_RESET_S", d.breaker_reset_s),
            rate_limit=int(num("RATE_LIMIT", d.rate_limit)),
            rate_window_s=num("RATE_WINDOW_S", d.rate_window_s),
            bundle_window_s=num("BUNDLE_WINDOW_S", d.bundle_window_s),
            contact_ttl_s=num("CONTACT_TTL_S", d.contact_ttl_s),
            max_per_endpoint=max(1, int(num("MAX_PER_ENDPOINT", d.max_per_endpoint))),
            max_lookups=max(1, int(num("MAX_LOOKUPS", d.max_lookups))),
            contact_batch=min(1000, max(1, int(num("CONTACT_BATCH", d.contact_batch)))),
        )
