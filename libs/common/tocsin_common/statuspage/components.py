"""Component state from open incidents and maintenance (pure), in Statuspage's names.

A component is in the worst state any of its causes puts it in: an open, unsuppressed
incident on one of its services (its urgency's impact from ``status_page.impact``, or the
impact a responder set on it), a maintenance in progress on it or one of its services. A
responder's override of the component wins over everything while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..config.status_page import ComponentImpact, StatusPage

__all__ = [
    "IMPACTS",
    "ChosenImpact",
    "ComponentOverride",
    "ComponentState",
    "ComponentStatus",
    "IncidentImpact",
    "Maintenance",
    "component_states",
    "impact_for",
    "overall_state",
    "parse_impact",
    "worst",
]

ComponentState = Literal[
    "operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage"
]
_SEVERITY: dict[str, int] = {
    "operational": 0,
    "under_maintenance": 1,
    "degraded_performance": 2,
    "partial_outage": 3,
    "major_outage": 4,
}
_BY_SEVERITY: tuple[ComponentState, ...] = (
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)


# The impact a responder may set on an incident: an incident state, or "operational" (it
# does not touch the public page's components).
ChosenImpact = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]
IMPACTS: tuple[ChosenImpact, ...] = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)


def parse_impact(text: str) -> ChosenImpact | None:
    """A responder's impact: one of IMPACTS, or None for "" (clear: follow the urgency);
    ValueError naming the field otherwise."""
    value = text.strip()
    if not value:
        return None
    for impact in IMPACTS:
        if impact == value:
            return impact
    raise ValueError(
        f"impact: {value[:40]!r} is not one of {', '.join(IMPACTS)} "
        "(or empty, to follow the urgency)"
    )


def impact_for(
    page: StatusPage, urgency: str, chosen: ChosenImpact | ComponentImpact | None
) -> ComponentState:
    """An open incident's impact: the one a responder chose, else its urgency's."""
    if chosen is not None:
        return chosen
    return page.impact.low if urgency == "low" else page.impact.high


def worst(states: Iterable[ComponentState]) -> ComponentState:
    """The most severe state (operational for none)."""
    return _BY_SEVERITY[max((_SEVERITY[s] for s in states), default=0)]


@dataclass(frozen=True)
class IncidentImpact:
    """An open incident as the component state needs it."""

    incident_id: str
    service: str
    urgency: str  # "high" | "low"
    impact: ChosenImpact | None = None  # set by a responder; None: from the urgency
    suppressed: bool = False  # silenced, in maintenance or inhibited: no public impact


@dataclass(frozen=True)
class Maintenance:
    """Planned work on ``components`` and on the components of ``services``."""

    maintenance_id: str
    title: str
    start: datetime
    end: datetime
    components: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()

    def active_at(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class ComponentOverride:
    component_id: str
    state: ComponentState
    actor: str
    until: datetime | None = None  # None: until removed


@dataclass(frozen=True)
class ComponentStatus:
    component_id: str
    state: ComponentState
    incident_ids: tuple[str, ...] = ()  # internal: what caused it (never made public)
    maintenance_ids: tuple[str, ...] = ()
    overridden_by: str = ""


def component_states(
    page: StatusPage,
    incidents: Iterable[IncidentImpact],
    maintenances: Iterable[Maintenance],
    overrides: Mapping[str, ComponentOverride],
    now: datetime,
) -> dict[str, ComponentStatus]:
    """Every configured component's state at ``now``."""
    incidents = [i for i in incidents if not i.suppressed]
    active = [m for m in maintenances if m.active_at(now)]
    result: dict[str, ComponentStatus] = {}
    for component in page.components:
        services = set(component.services)
        causes: list[ComponentState] = []
        incident_ids: list[str] = []
        for incident in sorted(incidents, key=lambda i: i.incident_id):
            if incident.service in services:
                causes.append(impact_for(page, incident.urgency, incident.impact))
                incident_ids.append(incident.incident_id)
        maintenance_ids = [
            m.maintenance_id
            for m in active
            if component.id in m.components or services & m.services
        ]
        if maintenance_ids:
            causes.append("under_maintenance")
        state = worst(causes)
        overridden_by = ""
        override = overrides.get(component.id)
        if override is not None and (override.until is None or now < override.until):
            state, overridden_by = override.state, override.actor
        result[component.id] = ComponentStatus(
            component.id, state, tuple(incident_ids), tuple(maintenance_ids), overridden_by
        )
    return result


def overall_state(states: Iterable[ComponentStatus]) -> ComponentState:
    """The page's headline: its worst component."""
    return worst(s.state for s in states)
