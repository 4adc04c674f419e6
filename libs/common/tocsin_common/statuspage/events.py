"""Status updates as they travel on incidents.events (STATUS_UPDATED events), and the
status page's incidents built from them (pure conversions, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime

from tocsin.v1 import incident_pb2

from .components import ChosenImpact, IncidentImpact, parse_impact
from .public import StatusIncident
from .updates import STATUSES, StatusUpdate

__all__ = [
    "chosen_impact",
    "impact_of",
    "public_id",
    "status_incident_of",
    "updates_of",
    "urgency_of",
]

_URGENCY = {incident_pb2.URGENCY_LOW: "low"}


def _at(stamp: object) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def updates_of(events: Iterable[incident_pb2.IncidentEvent]) -> list[StatusUpdate]:
    """The status updates among an incident's events, oldest first."""
    found = []
    for event in events:
        if event.type != incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED:
            continue
        posted = event.status_update
        status = next((s for s in STATUSES if s == posted.status), None)
        if status is None:
            continue  # not made by post_update: never shown
        found.append(
            StatusUpdate(
                incident_id=event.incident.incident_id,
                status=status,
                message=posted.message,
                posted_by=event.actor,
                posted_at=_at(event.at),
                public_title=posted.public_title,
            )
        )
    return found


def public_id(incident_id: str, secret: bytes) -> str:
    """The incident's id on the public page: derived from the incident id with a key, so the
    page never shows the internal id and nobody can turn one into the other."""
    return hmac.new(secret, incident_id.encode(), hashlib.sha256).hexdigest()[:16]


def urgency_of(incident: incident_pb2.Incident) -> str:
    return _URGENCY.get(incident.urgency, "high")


def chosen_impact(incident: incident_pb2.Incident) -> ChosenImpact | None:
    """The impact a responder set on the incident (None: it follows the urgency, or what
    is stored is no impact this build knows)."""
    try:
        return parse_impact(incident.impact)
    except ValueError:
        return None


def impact_of(incident: incident_pb2.Incident) -> IncidentImpact:
    """An open incident as the component state needs it."""
    return IncidentImpact(
        incident_id=incident.incident_id,
        service=incident.service_id,
        urgency=urgency_of(incident),
        impact=chosen_impact(incident),
        suppressed=incident.suppressed,
    )


def status_incident_of(
    incident: incident_pb2.Incident,
    events: Iterable[incident_pb2.IncidentEvent],
    secret: bytes,
) -> StatusIncident:
    """An incident with its status updates, as the public page's builder takes it."""
    return StatusIncident(
        public_id=public_id(incident.incident_id, secret),
        incident_id=incident.incident_id,
        service=incident.service_id,
        title=incident.title,
        urgency=urgency_of(incident),
        opened_at=_at(incident.created_at),
        updates=tuple(updates_of(events)),
        impact=chosen_impact(incident),
        resolved_at=_at(incident.resolved_at) if incident.HasField("resolved_at") else None,
        labels=dict(incident.labels),
        assignee=incident.assigned_user_id,
    )
