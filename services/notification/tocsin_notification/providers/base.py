"""The one interface every notification provider implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class IncidentLine:
    """One incident of a message (a bundled message lists several)."""

    incident_id: str
    service_id: str
    title: str
    status: str
    urgency: str
    severity: str = ""
    since: str = ""  # ISO 8601, when the incident opened
    runbook_url: str = ""
    ack_url: str = ""
    resolve_url: str = ""
    reminder: str = ""  # a reminder's text (empty on a page)
    incident_url: str = ""  # the incident in the console (set on reminders)
    # A message asking for an automation action's approval (instead of ack/resolve links):
    # what waits (``ask``: "rule x (triggered): POST https://runner/…, until <time>").
    ask: str = ""
    approve_url: str = ""
    reject_url: str = ""


@dataclass(frozen=True)
class Page:
    """What to tell one person about one incident (or a bundle of them), ready for a
    channel: the first incident's fields, the rendered `subject`/`text`, and `incidents`
    listing every incident of the message (one, or several when bundled)."""

    incident_id: str
    service_id: str
    title: str
    status: str
    urgency: str
    user_id: str
    user_name: str
    address: str
    idempotency_key: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str = ""
    since: str = ""
    runbook_url: str = ""
    ack_url: str = ""
    resolve_url: str = ""
    subject: str = ""
    text: str = ""
    incidents: tuple[IncidentLine, ...] = ()
    ask: str = ""
    approve_url: str = ""
    reject_url: str = ""
    unsigned: bool = False  # webhook: the contact method is `unsigned: true` in the config
    # More message headers (e-mail to a status page subscriber: List-Unsubscribe)
    headers: tuple[tuple[str, str], ...] = ()
    reminder: str = ""  # a reminder's kind (e.g. status_update_due), not a page; "" a page

    @property
    def bundled(self) -> bool:
        return len(self.incidents) > 1


class DeliveryError(Exception):
    """A failed delivery; `retryable` says whether another attempt may succeed
    (5xx, 429, timeouts, connection errors) or not (other 4xx, a bad address)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    """A channel. Construct with no arguments, or give the class a
    `from_settings(settings: NotificationSettings)` classmethod to read config."""

    channel: str

    async def send(self, page: Page) -> str:
        """Deliver the page; return a short receipt (e.g. the peer's status).

        Raise DeliveryError on failure."""
        ...

    async def close(self) -> None: ...
