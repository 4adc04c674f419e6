"""The public page from escalation's, correlation's and insight's answers (pure: no I/O).

:func:`assemble` turns escalation's StatusPage answer (open incidents, incidents with status
updates), the config's maintenance windows, correlation's runtime ones (StatusMaintenance)
and insight's uptime per service into
:class:`~tocsin_common.statuspage.public.PublicPage`; :func:`summary` shapes it like
Statuspage's ``/api/v2/summary.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tocsin.v1 import incident_service_pb2, silence_service_pb2
from tocsin_common.config import TocsinConfig
from tocsin_common.maintenance import DEFAULT_PUBLIC_TITLE
from tocsin_common.statuspage.components import (
    ComponentOverride,
    Maintenance,
    component_states,
)
from tocsin_common.statuspage.events import impact_of, status_incident_of
from tocsin_common.statuspage.public import PublicPage, build_public_page

__all__ = [
    "assemble",
    "component_uptime",
    "maintenances_of",
    "runtime_maintenances",
    "summary",
]

DEFAULT_MAINTENANCE_TITLE = DEFAULT_PUBLIC_TITLE
INDICATORS = {
    "operational": ("none", "All Systems Operational"),
    "under_maintenance": ("maintenance", "Service Under Maintenance"),
    "degraded_performance": ("minor", "Degraded Performance"),
    "partial_outage": ("major", "Partial System Outage"),
    "major_outage": ("critical", "Major System Outage"),
}


def maintenances_of(config: TocsinConfig) -> list[Maintenance]:
    """The config's planned maintenance windows of services on the page (a component's),
    one per window (its description is its public title)."""
    shown = {s for c in config.status_page.components for s in c.services}
    found = []
    for service in config.services:
        if service.id not in shown:
            continue  # not on the page: its windows are nobody's business outside
        for n, window in enumerate(service.maintenance_windows):
            found.append(
                Maintenance(
                    maintenance_id=f"{service.id}#{n}",
                    title=window.description.strip() or DEFAULT_MAINTENANCE_TITLE,
                    start=window.start,
                    end=window.end,
                    services=frozenset({service.id}),
                )
            )
    return found


def runtime_maintenances(
    config: TocsinConfig, windows: Iterable[silence_service_pb2.PublicMaintenanceWindow]
) -> list[Maintenance]:
    """The runtime maintenance windows of services on the page, by their public title
    ("Scheduled maintenance" without one: never their internal description)."""
    shown = {s for c in config.status_page.components for s in c.services}
    return [
        Maintenance(
            maintenance_id=f"runtime:{w.window_id}",
            title=w.public_title.strip() or DEFAULT_MAINTENANCE_TITLE,
            start=w.starts_at.ToDatetime(tzinfo=UTC),
            end=w.ends_at.ToDatetime(tzinfo=UTC),
            services=frozenset({w.service_id}),
        )
        for w in windows
        if w.service_id in shown
    ]


def component_uptime(config: TocsinConfig, by_service: Mapping[str, float]) -> dict[str, float]:
    """Each component's uptime percent: its worst service's (availability 0..1 per service
    id; a component none of whose services was answered has none)."""
    found: dict[str, float] = {}
    for component in config.status_page.components:
        known = [by_service[s] for s in component.services if s in by_service]
        if known:
            found[component.id] = round(100 * min(known), 3)
    return found


def assemble(
    config: TocsinConfig,
    facts: incident_service_pb2.StatusPageResponse,
    uptime: Mapping[str, float],
    now: datetime,
    secret: bytes,
    overrides: Mapping[str, ComponentOverride] | None = None,
    windows: Iterable[silence_service_pb2.PublicMaintenanceWindow] = (),
) -> PublicPage:
    """The page at ``now``; ``uptime``: availability 0..1 per service id; ``overrides``:
    responders' overrides by component id (they win while they last); ``windows``: the
    runtime maintenance windows (correlation's StatusMaintenance)."""
    page = config.status_page
    maintenances = maintenances_of(config) + runtime_maintenances(config, windows)
    states = component_states(
        page, (impact_of(i) for i in facts.open), maintenances, overrides or {}, now
    )
    incidents = [status_incident_of(u.incident, u.updates, secret) for u in facts.updated]
    return build_public_page(
        page, states, incidents, maintenances, component_uptime(config, uptime), now
    )


def summary(page: PublicPage, url: str) -> dict[str, Any]:
    """The page in the shape of Statuspage's ``/api/v2/summary.json`` (plus each component's
    ``uptime_percent``)."""
    indicator, description = INDICATORS[page.state]
    return {
        "page": {"name": page.title, "url": url, "updated_at": page.updated_at},
        "status": {"indicator": indicator, "description": description},
        "components": [
            {
                "name": c.name,
                "group": c.group or None,
                "description": c.description or None,
                "status": c.state,
                "uptime_percent": c.uptime_percent,
            }
            for c in page.components
        ],
        "incidents": [
            {
                "id": i.id,
                "name": i.title,
                "status": i.status,
                "impact": i.impact,
                "created_at": i.started_at,
                "updated_at": i.updates[0].posted_at if i.updates else i.started_at,
                "resolved_at": i.resolved_at,
                "components": list(i.components),
                "incident_updates": [
                    {"status": u.status, "body": u.message, "created_at": u.posted_at}
                    for u in i.updates
                ],
            }
            for i in page.incidents
        ],
        "scheduled_maintenances": [
            {
                "name": m.title,
                "status": "in_progress" if m.in_progress else "scheduled",
                "scheduled_for": m.start,
                "scheduled_until": m.end,
                "components": list(m.components),
            }
            for m in page.maintenances
        ],
    }
