"""Generic webhook: POSTs the page as JSON, signed with HMAC-SHA256.

Signature header: `X-Tocsin-Signature: t=<unix seconds>,v1=<hex>` where the hex digest
is HMAC-SHA256(secret, f"{t}.{body}"). A receiver recomputes it over the raw body and
rejects a stale `t` to stop replays (docs/notifications.md).

The secret is read at start with tocsin_common.secrets.read_secret from the variable named
by `notification.webhook.signing_secret_env` (or `<variable>_FILE`). A webhook contact
method goes out unsigned only when the config says `unsigned: true` on it: notification
refuses to start without the secret when any webhook contact method is not unsigned
(`require_signing_secret`), and a page to such a method is refused (not retried) if the
secret is missing anyway (a contact method added by a reload).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from tocsin_common.config.model import NotificationSettings, TocsinConfig
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.secrets import SecretError, read_secret

from tocsin_notification.providers.base import DeliveryError, Page
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
        "event": "incident.reminder" if page.reminder else "incident.page",
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
    if page.reminder:
        head = page.incidents[0] if page.incidents else None
        body["reminder"] = {
            "kind": page.reminder,
            "text": head.reminder if head else "",
            "incident_url": head.incident_url if head else "",
        }
    if page.ask:
        body["event"] = "automation.approval_requested"
        body["approval"] = {"action": page.ask}
    links = {
        name: url
        for name, url in (
            ("incident", page.incidents[0].incident_url if page.incidents else ""),
            ("acknowledge", page.ack_url),
            ("resolve", page.resolve_url),
            ("approve", page.approve_url),
            ("reject", page.reject_url),
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
                **({"reminder": line.reminder} if line.reminder else {}),
                "links": {
                    k: v
                    for k, v in (
                        ("incident", line.incident_url),
                        ("acknowledge", line.ack_url),
                        ("resolve", line.resolve_url),
                        ("approve", line.approve_url),
                        ("reject", line.reject_url),
                        ("runbook", line.runbook_url),
                    )
                    if v
                },
            }
            for line in page.incidents
        ]
    return body


def signed_webhooks(config: TocsinConfig) -> list[str]:
    """The webhook contact methods that must be signed (not `unsigned: true`), as
    `user/contact-method`."""
    return [
        f"{user.id}/{method.id}"
        for user in config.users
        for method in user.contact_methods
        if method.type == "webhook" and not method.unsigned
    ]


def require_signing_secret(
    config: TocsinConfig, env: Mapping[str, str] | None = None
) -> str | None:
    """The webhook signing secret; SecretError when it is missing (or unusable) while a
    webhook contact method needs it. None when there is none and nothing needs it."""
    name = config.notification.webhook.signing_secret_env
    needed = signed_webhooks(config)
    if not name:
        # The loader refuses this combination; a config built in code could still have it.
        if needed:
            raise SecretError(
                "notification.webhook.signing_secret_env is empty but webhook contact "
                f"methods {', '.join(needed)} are not `unsigned: true`"
            )
        return None
    try:
        return read_secret(name, env, required=bool(needed))
    except SecretError as e:
        if not needed:
            raise
        shown = ", ".join(needed[:5]) + (f" and {len(needed) - 5} more" if len(needed) > 5 else "")
        raise SecretError(
            f"{e}; webhook contact methods {shown} are signed (set `unsigned: true` on a "
            "contact method to send its pages without a signature)"
        ) from None


class WebhookProvider:
    channel = "webhook"

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        secret_env: str = "TOCSIN_WEBHOOK_SECRET",
        timeout_s: float = 10.0,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else (secret or b"")
        self._secret_env = secret_env
        self._http = HttpClient("webhook", timeout_s, destinations=destinations)

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> WebhookProvider:
        name = settings.webhook.signing_secret_env
        # Not required here: whether it is depends on the contact methods, which the
        # service checks at start (require_signing_secret) before building providers.
        secret = read_secret(name, required=False) if name else None
        return cls(
            secret=secret,
            secret_env=name or "notification.webhook.signing_secret_env",
            destinations=DestinationPolicy(settings.outgoing.allow),
        )

    async def send(self, page: Page) -> str:
        body = json.dumps(payload(page), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": page.idempotency_key}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body, int(time.time()))
        elif not page.unsigned:
            raise DeliveryError(
                f"webhook page not sent: no signing secret ({self._secret_env} is not set) "
                "and the contact method is not `unsigned: true`",
                retryable=False,
            )
        return await self._http.post(page.address, data=body, headers=headers)

    async def close(self) -> None:
        await self._http.close()
