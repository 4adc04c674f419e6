"""The one interface every notification provider implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Page:
    """What to tell one person about one incident, ready for a channel to render."""

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


class DeliveryError(Exception):
    """A failed delivery; `retryable` says whether another attempt may succeed
    (5xx, timeouts, connection errors) or not (other 4xx, a bad address)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    channel: str

    async def send(self, page: Page) -> str:
        """Deliver the page; return a short receipt (e.g. the peer's status).

        Raise DeliveryError on failure."""
        ...

    async def close(self) -> None: ...
