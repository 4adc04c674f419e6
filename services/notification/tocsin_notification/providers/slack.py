"""Slack incoming webhook: the rendered text as mrkdwn blocks, with buttons for the
acknowledge/resolve links. The contact method's address is the webhook URL (a credential:
it is never logged or put on a span).

The text is rendered from escaped values (render.py); the subject is plain text, shown as
it is in the plain_text header and escaped in the message's mrkdwn `text` fallback."""

from __future__ import annotations

from typing import Any

from tocsin_common.config.model import NotificationSettings
from tocsin_common.outgoing import DestinationPolicy

from tocsin_notification.markup import slack_text
from tocsin_notification.providers.base import Page
from tocsin_notification.providers.http import HttpClient


def blocks(page: Page) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": page.subject[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": page.text[:3000]}},
    ]
    buttons: list[dict[str, Any]] = []
    if not page.bundled:
        if page.ack_url:
            buttons.append(_button("Acknowledge", page.ack_url, "primary"))
        if page.resolve_url:
            buttons.append(_button("Resolve", page.resolve_url, None))
        if page.approve_url:
            buttons.append(_button("Approve", page.approve_url, "primary"))
        if page.reject_url:
            buttons.append(_button("Reject", page.reject_url, "danger"))
        if page.runbook_url:
            buttons.append(_button("Runbook", page.runbook_url, None))
    if buttons:
        body.append({"type": "actions", "elements": buttons})
    return {"text": slack_text(page.subject), "blocks": body}


def _button(label: str, url: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url,
    }
    if style:
        button["style"] = style
    return button


class SlackProvider:
    channel = "slack"

    def __init__(
        self, *, timeout_s: float = 10.0, destinations: DestinationPolicy | None = None
    ) -> None:
        self._http = HttpClient("slack", timeout_s, destinations=destinations)

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> SlackProvider:
        return cls(destinations=DestinationPolicy(settings.outgoing.allow))

    async def send(self, page: Page) -> str:
        return await self._http.post(page.address, json=blocks(page))

    async def close(self) -> None:
        await self._http.close()
