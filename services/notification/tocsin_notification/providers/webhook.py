"""Generic webhook: POSTs the page as JSON, signed with HMAC-SHA256.

Signature header: `X-Tocsin-Signature: t=<unix seconds>,v1=<hex>` where the hex digest
is HMAC-SHA256(secret, f"{t}.{body}"). A receiver recomputes it over the raw body and
rejects a stale `t` to stop replays (docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

import aiohttp
from tocsin_common.tracing import inject_http_headers, tracer

from tocsin_notification.providers.base import DeliveryError, Page

SIGNATURE_HEADER = "X-Tocsin-Signature"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, body: bytes, header: str, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: check the signature and that it is fresh."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header is untrusted.
    expected = sign(secret, body, timestamp).encode()
    return hmac.compare_digest(expected, header.encode("utf-8", "replace"))


def payload(page: Page) -> dict[str, Any]:
    return {
        "event": "incident.page",
        "incident": {
            "id": page.incident_id,
            "service": page.service_id,
            "title": page.title,
            "status": page.status,
            "urgency": page.urgency,
        },
        "user": {"id": page.user_id, "name": page.user_name},
        "idempotency_key": page.idempotency_key,
        **({"details": page.details} if page.details else {}),
    }


class WebhookProvider:
    channel = "webhook"

    def __init__(
        self, *, secret_env: str = "TOCSIN_WEBHOOK_SECRET", timeout_s: float = 10.0
    ) -> None:
        self._secret = os.environ.get(secret_env, "").encode()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._tracer = tracer("tocsin.notification.webhook")

    async def send(self, page: Page) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(payload(page), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": page.idempotency_key}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(time.time()))
        with self._tracer.start_as_current_span(
            "webhook POST", attributes={"url.full": page.address}
        ):
            inject_http_headers(headers)  # the receiver can continue the trace
            try:
                async with self._session.post(page.address, data=body, headers=headers) as response:
                    if response.status >= 500 or response.status == 429:
                        raise DeliveryError(f"HTTP {response.status}", retryable=True)
                    if response.status >= 400:
                        raise DeliveryError(f"HTTP {response.status}", retryable=False)
                    return f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                raise DeliveryError(f"{type(e).__name__}: {e}", retryable=True) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
