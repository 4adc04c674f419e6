"""Microsoft Teams incoming webhook: a MessageCard with OpenUri actions for the
acknowledge/resolve links. The contact method's address is the webhook URL (a credential:
it is never logged or put on a span).

The text is rendered from escaped values (render.py); the subject, plain text, is escaped
here for the card's title and summary."""

from __future__ import annotations

from typing import Any

from tocsin_common.config.model import NotificationSettings
from tocsin_common.outgoing import DestinationPolicy

from tocsin_notification.markup import teams_text, teams_url
from tocsin_notification.providers.base import Page
from tocsin_notification.providers.http import HttpClient

_COLOURS = {"high": "D70000", "low": "FFA500"}


def message_card(page: Page) -> dict[str, Any]:
    actions: list[dict[str, Any]] = []
    if not page.bundled:
        for name, url in (
            ("Acknowledge", page.ack_url),
            ("Resolve", page.resolve_url),
            ("Approve", page.approve_url),
            ("Reject", page.reject_url),
            ("Runbook", page.runbook_url),
        ):
            if url:
                actions.append(
                    {
                        "@type": "OpenUri",
                        "name": name,
                        "targets": [{"os": "default", "uri": teams_url(url)}],
                    }
                )
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "summary": teams_text(page.subject),
        "themeColor": _COLOURS.get(page.urgency, "808080"),
        "title": teams_text(page.subject),
        "text": page.text,
    }
    if actions:
        card["potentialAction"] = actions
    return card


class TeamsProvider:
    channel = "teams"

    def __init__(
        self, *, timeout_s: float = 10.0, destinations: DestinationPolicy | None = None
    ) -> None:
        self._http = HttpClient("teams", timeout_s, destinations=destinations)

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> TeamsProvider:
        return cls(destinations=DestinationPolicy(settings.outgoing.allow))

    async def send(self, page: Page) -> str:
        return await self._http.post(page.address, json=message_card(page))

    async def close(self) -> None:
        await self._http.close()
