"""Notification providers: one module per channel, each implementing `Provider`.

Providers are found by entry point (group `tocsin.providers`), so a package of a user's
own can add a channel without touching Tocsin.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from tocsin_notification.providers.base import DeliveryError, Page, Provider

ENTRY_POINT_GROUP = "tocsin.providers"

__all__ = ["ENTRY_POINT_GROUP", "DeliveryError", "Page", "Provider", "discover"]


def discover() -> dict[str, type[Provider]]:
    """Every installed provider class, by the channel name of its entry point."""
    found: dict[str, type[Provider]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found
