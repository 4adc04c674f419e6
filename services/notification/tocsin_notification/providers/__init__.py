"""Notification providers: one module per channel, each implementing `Provider`.

Providers are found by entry point (group `tocsin.providers`), so a package of a user's
own can add a channel without touching Tocsin.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from tocsin_common.config.model import NotificationSettings

from tocsin_notification.providers.base import DeliveryError, IncidentLine, Page, Provider

ENTRY_POINT_GROUP = "tocsin.providers"

__all__ = [
    "ENTRY_POINT_GROUP",
    "DeliveryError",
    "IncidentLine",
    "Page",
    "Provider",
    "build",
    "discover",
]

log = logging.getLogger("tocsin.notification")


def discover() -> dict[str, type[Provider]]:
    """Every installed provider class, by the channel name of its entry point."""
    found: dict[str, type[Provider]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[entry.name] = entry.load()
        except Exception:  # one broken plugin must not take the others down
            log.exception("cannot load provider %s (%s)", entry.name, entry.value)
    return found


def build(cls: type[Provider], settings: NotificationSettings) -> Provider:
    """An instance of a provider class: `from_settings(settings)` when it has one."""
    factory: Any = getattr(cls, "from_settings", None)
    if callable(factory):
        provider: Provider = factory(settings)
        return provider
    return cls()
