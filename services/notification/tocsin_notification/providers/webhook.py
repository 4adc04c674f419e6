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

from tocsin_common.config.model import NotificationSettings

from tocsin_notification.providers.base import Page
from tocsin_notification.providers.http import HttpClient

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
    body: dict[str, Any] = {
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
    }
    if page.details:
        body["details"] = page.details
    links = {
        name: url
        for name, url in (
            ("acknowledge", page.ack_url),
            ("resolve", page.resolve_url),
            ("runbook", page.runbook_url),
        )
        if url
    }
    if links:
        body["links"] = links
    if page.text:
        body["text"] = page.text
    if page.incidents:
        body["incidents"] = [
            {
                "id": line.incident_id,
                "service": line.service_id,
                "title": line.title,
                "status": line.status,
                "urgency": line.urgency,
                "severity": line.severity,
                "since": line.since,
                "links": {
                    k: v
                    for k, v in (
                        ("acknowledge", line.ack_url),
                        ("resolve", line.resolve_url),
                        ("runbook", line.runbook_url),
                    )
                    if v
                },
            }
            for line in page.incidents
        ]
    return body


class WebhookProvider:
    channel = "webhook"

    def __init__(
        self, *, secret_env: str = "TOCSIN_WEBHOOK_SECRET", timeout_s: float = 10.0
    ) -> None:
        self._secret = os.environ.get(secret_env, "").encode()
        self._http = HttpClient("webhook", timeout_s)

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> WebhookProvider:
        return cls(secret_env=settings.webhook.signing_secret_env)

    async def send(self, page: Page) -> str:
        body = json.dumps(payload(page), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": page.idempotency_key}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(time.time()))
        return await self._http.post(page.address, data=body, headers=headers)

    async def close(self) -> None:
        await self._http.close()
