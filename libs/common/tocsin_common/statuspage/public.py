"""The public view of the status page (pure): only what was posted for the public.

:func:`build_public_page` takes the internal picture (component states with the incidents
that caused them, incidents with their internal titles, services, labels and responders)
and keeps only public fields: components by their public name and group, their state and
90-day uptime; incidents that have a public update, by their public id and public title,
with the updates' statuses, messages and times (never who posted them); maintenance by its
title. Nothing else can reach the page: the view's classes have no field for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config.status_page import StatusPage
from .components import (
    ChosenImpact,
    ComponentState,
    ComponentStatus,
    Maintenance,
    impact_for,
    overall_state,
)
from .updates import IncidentStatus, StatusUpdate

__all__ = [
    "PublicComponentView",
    "PublicIncidentView",
    "PublicMaintenanceView",
    "PublicPage",
    "PublicUpdateView",
    "StatusIncident",
    "build_public_page",
]


@dataclass(frozen=True)
class StatusIncident:
    """An incident as the status page's builder sees it (internal fields included)."""

    public_id: str  # an id made for the page, not the incident id
    incident_id: str
    service: str
    title: str  # internal title: never public
    urgency: str
    opened_at: datetime
    updates: tuple[StatusUpdate, ...] = ()
    impact: ChosenImpact | None = None  # set by a responder; None: from the urgency
    resolved_at: datetime | None = None
    labels: Mapping[str, str] | None = None
    assignee: str = ""


@dataclass(frozen=True)
class PublicUpdateView:
    status: IncidentStatus
    message: str
    posted_at: str


@dataclass(frozen=True)
class PublicIncidentView:
    id: str
    title: str
    status: IncidentStatus
    impact: ComponentState
    components: tuple[str, ...]  # public names
    started_at: str
    resolved_at: str | None
    updates: tuple[PublicUpdateView, ...]  # newest first


@dataclass(frozen=True)
class PublicComponentView:
    name: str
    group: str
    description: str
    state: ComponentState
    uptime_percent: float | None  # over the last 90 days, from insight


@dataclass(frozen=True)
class PublicMaintenanceView:
    title: str
    start: str
    end: str
    in_progress: bool
    components: tuple[str, ...]


@dataclass(frozen=True)
class PublicPage:
    title: str
    state: ComponentState
    updated_at: str
    components: tuple[PublicComponentView, ...]
    incidents: tuple[PublicIncidentView, ...]
    maintenances: tuple[PublicMaintenanceView, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON the public page and its API serve."""
        return asdict(self)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def readable_time(iso: str) -> str:
    """An instant of the page (as _iso writes it) in a reader's terms, to the minute and in
    UTC, as public status pages show it: "1 Jun 2026, 11:40 UTC". The page has no script to
    show a visitor's own zone; the machine-readable instant stays in the datetime
    attribute and summary.json."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


def build_public_page(
    page: StatusPage,
    states: Mapping[str, ComponentStatus],
    incidents: Iterable[StatusIncident],
    maintenances: Iterable[Maintenance],
    uptime: Mapping[str, float],
    now: datetime,
    resolved_history: timedelta = timedelta(days=7),
    upcoming: timedelta = timedelta(days=30),
) -> PublicPage:
    """The page at ``now``: incidents open or resolved within ``resolved_history`` that
    have at least one public update; maintenance in progress or starting within
    ``upcoming``. ``uptime``: percent per component id."""
    names = {c.id: c.name for c in page.components}
    components = tuple(
        PublicComponentView(
            name=c.name,
            group=c.group,
            description=c.description,
            state=states[c.id].state if c.id in states else "operational",
            uptime_percent=uptime.get(c.id),
        )
        for c in page.components
    )
    shown: list[PublicIncidentView] = []
    for incident in sorted(incidents, key=lambda i: i.opened_at, reverse=True):
        updates: Sequence[StatusUpdate] = incident.updates
        if not updates:
            continue  # nothing posted for the public yet
        latest = updates[-1]
        resolved_at = latest.posted_at if latest.status == "resolved" else None
        if resolved_at is not None and now - resolved_at > resolved_history:
            continue
        affected = tuple(names[c.id] for c in page.components if incident.service in c.services)
        shown.append(
            PublicIncidentView(
                id=incident.public_id,
                title=latest.public_title,
                status=latest.status,
                impact=impact_for(page, incident.urgency, incident.impact),
                components=affected,
                started_at=_iso(updates[0].posted_at),
                resolved_at=_iso(resolved_at) if resolved_at else None,
                updates=tuple(
                    PublicUpdateView(u.status, u.message, _iso(u.posted_at))
                    for u in reversed(updates)
                ),
            )
        )
    planned: list[PublicMaintenanceView] = []
    for item in sorted(maintenances, key=lambda m: m.start):
        if item.end <= now or item.start > now + upcoming:
            continue
        affected = tuple(
            c.name
            for c in page.components
            if c.id in item.components or set(c.services) & item.services
        )
        planned.append(
            PublicMaintenanceView(
                item.title, _iso(item.start), _iso(item.end), item.active_at(now), affected
            )
        )
    return PublicPage(
        title=page.title,
        state=overall_state(states[c.id] for c in page.components if c.id in states),
        updated_at=_iso(now),
        components=components,
        incidents=tuple(shown),
        maintenances=tuple(planned),
    )
