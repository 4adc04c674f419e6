"""The public view of the status page: only public fields, and no internal value leaks."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from tocsin_common.config.status_page import StatusPage
from tocsin_common.statuspage.components import IncidentImpact, Maintenance, component_states
from tocsin_common.statuspage.public import (
    PublicComponentView,
    PublicIncidentView,
    PublicMaintenanceView,
    PublicPage,
    PublicUpdateView,
    StatusIncident,
    build_public_page,
)
from tocsin_common.statuspage.updates import post_update

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAGE = StatusPage.model_validate(
    {
        "enabled": True,
        "title": "Acme status",
        "components": [
            {
                "id": "cmp-shop",
                "name": "Web shop",
                "group": "Storefront",
                "services": ["checkout-svc"],
            },
            {"id": "cmp-pay", "name": "Payments", "services": ["payments-svc"]},
        ],
    }
)
# Values that exist only inside Tocsin; none of them may appear on the page.
SECRETS = [
    "inc-7f3a-internal",
    "checkout-svc",
    "payments-svc",
    "OOMKilled on pod checkout-5d9",
    "responder-mia",
    "assignee-bob",
    "label-value-k8s-ns",
    "m-internal-id",
    "cmp-shop",
    "cmp-pay",
]


def update(previous: list, status: str, minutes: int, title: str = "") -> list:  # type: ignore[type-arg]
    made, _ = post_update(
        previous,
        incident_id="inc-7f3a-internal",
        status=status,
        message=f"{status}: we are on it",
        posted_by="responder-mia",
        now=NOW + timedelta(minutes=minutes),
        max_chars=5000,
        public_title=title,
    )
    return [*previous, made]


def build() -> PublicPage:
    updates = update(update([], "investigating", -30, "Checkout errors"), "identified", -10)
    incidents = [
        StatusIncident(
            public_id="p-20260601-1",
            incident_id="inc-7f3a-internal",
            service="checkout-svc",
            title="OOMKilled on pod checkout-5d9",
            urgency="high",
            opened_at=NOW - timedelta(hours=1),
            updates=tuple(updates),
            labels={"namespace": "label-value-k8s-ns"},
            assignee="assignee-bob",
        ),
        # No public update yet: not on the page (its component still shows the impact).
        StatusIncident(
            public_id="p-2",
            incident_id="inc-unposted",
            service="payments-svc",
            title="internal only",
            urgency="low",
            opened_at=NOW,
        ),
    ]
    maintenance = Maintenance(
        "m-internal-id",
        "Database upgrade",
        NOW + timedelta(days=1),
        NOW + timedelta(days=1, hours=2),
        services=frozenset({"payments-svc"}),
    )
    states = component_states(
        PAGE,
        [
            IncidentImpact("inc-7f3a-internal", "checkout-svc", "high"),
            IncidentImpact("inc-unposted", "payments-svc", "low"),
        ],
        [maintenance],
        {},
        NOW,
    )
    return build_public_page(PAGE, states, incidents, [maintenance], {"cmp-shop": 99.95}, NOW)


def test_the_page_shows_what_was_posted() -> None:
    page = build()
    assert (page.title, page.state) == ("Acme status", "partial_outage")
    assert [(c.name, c.group, c.state, c.uptime_percent) for c in page.components] == [
        ("Web shop", "Storefront", "partial_outage", 99.95),
        ("Payments", "", "degraded_performance", None),
    ]
    [incident] = page.incidents
    assert (incident.id, incident.title, incident.status) == (
        "p-20260601-1",
        "Checkout errors",
        "identified",
    )
    assert incident.components == ("Web shop",) and incident.impact == "partial_outage"
    assert [u.status for u in incident.updates] == ["identified", "investigating"]
    assert incident.started_at == "2026-06-01T11:30:00Z" and incident.resolved_at is None
    [planned] = page.maintenances
    assert (planned.title, planned.in_progress, planned.components) == (
        "Database upgrade",
        False,
        ("Payments",),
    )


def test_no_internal_field_leaks() -> None:
    text = json.dumps(build().to_dict())
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"internal values on the public page: {leaked}"


def test_the_view_classes_have_only_public_fields() -> None:
    allowed = {
        PublicPage: {"title", "state", "updated_at", "components", "incidents", "maintenances"},
        PublicComponentView: {"name", "group", "description", "state", "uptime_percent"},
        PublicIncidentView: {
            "id",
            "title",
            "status",
            "impact",
            "components",
            "started_at",
            "resolved_at",
            "updates",
        },
        PublicUpdateView: {"status", "message", "posted_at"},
        PublicMaintenanceView: {"title", "start", "end", "in_progress", "components"},
    }
    for view, names in allowed.items():
        assert {f.name for f in dataclasses.fields(view)} == names, view.__name__


def test_resolved_incidents_leave_the_page_after_the_history_window() -> None:
    updates = update(update([], "investigating", -600, "Old"), "resolved", -590)
    old = StatusIncident(
        "p-old", "i", "checkout-svc", "t", "high", NOW - timedelta(hours=11), updates=tuple(updates)
    )
    states = component_states(PAGE, [], [], {}, NOW)
    shown = build_public_page(PAGE, states, [old], [], {}, NOW)
    assert shown.incidents[0].resolved_at == "2026-06-01T02:10:00Z"
    later = build_public_page(PAGE, states, [old], [], {}, NOW + timedelta(days=8))
    assert later.incidents == () and later.state == "operational"
