"""The ``status_page`` section: public components and reminders (docs/status-page.md).

Imported by :mod:`.model` for :class:`~.model.TocsinConfig`; the field types come from there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from .durations import PositiveDuration
from .model import Name, Ref, Slug, _Model

__all__ = ["ComponentImpact", "ImpactByUrgency", "PublicComponent", "Reminders", "StatusPage"]

# Statuspage's component states that an incident can cause (maintenance is its own).
ComponentImpact = Literal["degraded_performance", "partial_outage", "major_outage"]


class PublicComponent(_Model):
    """A part of the product as the public names it, fed by one or more services."""

    id: Slug
    name: Name = Field(max_length=200)
    description: str = Field(default="", max_length=1000)
    group: str = Field(default="", max_length=200)
    services: tuple[Ref, ...] = Field(min_length=1, max_length=1000)


class ImpactByUrgency(_Model):
    """The component state an open incident of each urgency causes (a responder may set an
    incident's impact instead)."""

    high: ComponentImpact = "partial_outage"
    low: ComponentImpact = "degraded_performance"


class Reminders(_Model):
    """Remind an incident's responders when it has had no public update for this long
    (``null``: no reminder at that urgency)."""

    high: PositiveDuration | None = timedelta(minutes=30)
    low: PositiveDuration | None = None


class StatusPage(_Model):
    """The public status page: its title, components, impacts and reminders."""

    enabled: bool = False
    title: Name = "Status"
    components: tuple[PublicComponent, ...] = Field(default=(), max_length=500)
    impact: ImpactByUrgency = Field(default_factory=ImpactByUrgency)
    update_reminders: Reminders = Field(default_factory=Reminders)
    confirmation_ttl: PositiveDuration = timedelta(hours=24)
    message_max_chars: int = Field(default=5000, ge=100, le=100_000)
