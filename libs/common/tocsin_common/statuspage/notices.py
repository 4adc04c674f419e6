"""What the status page's subscribers receive (pure): a status update as it leaves Tocsin,
the confirmation e-mail of a new e-mail subscription, and their links.

Only what was posted for the public goes out: the incident's public title, the update's
status and message (both already cleaned by ``sanitize_public_message``), the public names
of the affected components, the page's title and address, and when it was posted. The
classes have no field for anything else (no incident id, service, internal title, who
posted it), so no renderer can leak one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tocsin_common.config.status_page import StatusPage

from .subscriptions import LinkPurpose, link_token

__all__ = [
    "Notice",
    "SubscriberLinks",
    "affected_components",
    "confirmation_email",
    "fan_out_key",
    "links_for",
    "update_email",
    "webhook_body",
]

# The channels subscriber deliveries are recorded under on notifications.status (insight
# keeps them out of its paging facts).
EMAIL_CHANNEL = "status-email"
WEBHOOK_CHANNEL = "status-webhook"
CHANNELS = frozenset({EMAIL_CHANNEL, WEBHOOK_CHANNEL})


@dataclass(frozen=True)
class Notice:
    """One status update, public fields only."""

    update_id: str
    status: str
    title: str
    message: str
    component_ids: tuple[str, ...]
    posted_at: datetime


@dataclass(frozen=True)
class SubscriberLinks:
    confirm: str
    unsubscribe: str


def affected_components(page: StatusPage, service_id: str) -> tuple[str, ...]:
    """The ids of the public components an incident of ``service_id`` is on (none while
    the page is off)."""
    if not page.enabled:
        return ()
    return tuple(c.id for c in page.components if service_id in c.services)


def fan_out_key(update_id: str, subscription_id: str) -> str:
    """The idempotency key of one update to one subscriber: it reaches them once."""
    return f"status/{update_id}/{subscription_id}"


def links_for(base_url: str, key: bytes, subscription_id: str) -> SubscriberLinks:
    """The subscription's capability links on the api (``/status/subscriptions/...``)."""

    def link(purpose: LinkPurpose) -> str:
        token = link_token(key, purpose, subscription_id)
        return f"{base_url.rstrip('/')}/status/subscriptions/{subscription_id}/{purpose}/{token}"

    return SubscriberLinks(confirm=link("confirm"), unsubscribe=link("unsubscribe"))


def component_names(page: StatusPage, component_ids: Iterable[str]) -> list[str]:
    """The public names of these components, in the config's order (unknown ids left out:
    a component removed since)."""
    wanted = set(component_ids)
    return [c.name for c in page.components if c.id in wanted]


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def update_email(
    notice: Notice, names: Sequence[str], page_title: str, page_url: str, unsubscribe: str
) -> tuple[str, str]:
    """(subject, text) of an update to an e-mail subscriber."""
    # One line: a header cannot hold a line break (a title may carry one).
    subject = " ".join(f"[{page_title}] {notice.status.capitalize()}: {notice.title}".split())
    affected = ", ".join(names) or "(none listed)"
    text = (
        f"{notice.title}\n"
        f"Status: {notice.status}\n"
        f"Affected: {affected}\n"
        f"Posted: {_when(notice.posted_at)}\n\n"
        f"{notice.message}\n\n"
        f"Status page: {page_url}\n\n"
        f"You receive this because this address is subscribed to {page_title}.\n"
        f"Unsubscribe: {unsubscribe}\n"
    )
    return subject, text


def confirmation_email(
    page_title: str,
    names: Sequence[str],
    links: SubscriberLinks,
    ttl: timedelta,
    page_url: str,
) -> tuple[str, str]:
    """(subject, text) of the e-mail asking the address to confirm its subscription."""
    hours = ttl.total_seconds() / 3600
    within = f"{hours:g} hours" if hours != 1 else "1 hour"
    what = ", ".join(names) if names else "every component"
    text = (
        f"This address was subscribed to updates of {page_title} ({what}).\n\n"
        f"To receive them, confirm within {within}:\n{links.confirm}\n\n"
        "If you did not expect this, ignore this e-mail: nothing will be sent to you "
        f"unless you confirm.\n\nStatus page: {page_url}\n"
        f"Unsubscribe: {links.unsubscribe}\n"
    )
    return f"[{page_title}] Confirm your subscription", text


def webhook_body(
    notice: Notice,
    names: Sequence[str],
    page_title: str,
    page_url: str,
    subscription_id: str,
    unsubscribe: str,
) -> dict[str, Any]:
    """The JSON a webhook subscriber receives (signed like the webhook channel's pages),
    with the subscription's unsubscribe link."""
    return {
        "event": "status_page.update",
        "page": {"name": page_title, "url": page_url},
        "subscription": {"id": subscription_id, "unsubscribe": unsubscribe},
        "update": {
            "id": notice.update_id,
            "status": notice.status,
            "title": notice.title,
            "message": notice.message,
            "components": list(names),
            "posted_at": notice.posted_at.isoformat().replace("+00:00", "Z"),
        },
    }
