"""Component states from open incidents, maintenance and overrides (Statuspage's names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tocsin_common.config.status_page import StatusPage
from tocsin_common.statuspage.components import (
    ComponentOverride,
    IncidentImpact,
    Maintenance,
    component_states,
    overall_state,
    parse_impact,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAGE = StatusPage.model_validate(
    {
        "enabled": True,
        "components": [
            {
                "id": "shop",
                "name": "Web shop",
                "group": "Storefront",
                "services": ["checkout", "search"],
            },
            {"id": "pay", "name": "Payments", "services": ["payments"]},
        ],
        "impact": {"high": "major_outage", "low": "degraded_performance"},
    }
)
WORK = Maintenance(
    "m-1",
    "DB upgrade",
    NOW - timedelta(hours=1),
    NOW + timedelta(hours=1),
    services=frozenset({"payments"}),
)

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("nothing open", {}, "shop", "operational"),
    (
        "high urgency",
        {"incidents": [IncidentImpact("i1", "checkout", "high")]},
        "shop",
        "major_outage",
    ),
    (
        "low urgency",
        {"incidents": [IncidentImpact("i1", "search", "low")]},
        "shop",
        "degraded_performance",
    ),
    (
        "worst wins",
        {
            "incidents": [
                IncidentImpact("i1", "search", "low"),
                IncidentImpact("i2", "checkout", "high"),
            ]
        },
        "shop",
        "major_outage",
    ),
    (
        "impact set by a responder",
        {"incidents": [IncidentImpact("i1", "checkout", "high", "partial_outage")]},
        "shop",
        "partial_outage",
    ),
    (
        "impact set to operational: no impact at all",
        {"incidents": [IncidentImpact("i1", "checkout", "high", "operational")]},
        "shop",
        "operational",
    ),
    (
        "an operational impact does not hide maintenance",
        {
            "maintenances": [WORK],
            "incidents": [IncidentImpact("i1", "payments", "high", "operational")],
        },
        "pay",
        "under_maintenance",
    ),
    (
        "suppressed incidents do not count",
        {"incidents": [IncidentImpact("i1", "checkout", "high", suppressed=True)]},
        "shop",
        "operational",
    ),
    (
        "another component's service",
        {"incidents": [IncidentImpact("i1", "payments", "high")]},
        "shop",
        "operational",
    ),
    ("maintenance", {"maintenances": [WORK]}, "pay", "under_maintenance"),
    (
        "maintenance named by component",
        {
            "maintenances": [
                Maintenance("m-2", "t", NOW, NOW + timedelta(minutes=1), frozenset({"shop"}))
            ]
        },
        "shop",
        "under_maintenance",
    ),
    (
        "maintenance over",
        {
            "maintenances": [
                Maintenance(
                    "m-3", "t", NOW - timedelta(hours=2), NOW, services=frozenset({"payments"})
                )
            ]
        },
        "pay",
        "operational",
    ),
    (
        "an outage outranks maintenance",
        {"maintenances": [WORK], "incidents": [IncidentImpact("i1", "payments", "low")]},
        "pay",
        "degraded_performance",
    ),
    (
        "override wins",
        {
            "incidents": [IncidentImpact("i1", "checkout", "high")],
            "overrides": {"shop": ComponentOverride("shop", "partial_outage", "mia")},
        },
        "shop",
        "partial_outage",
    ),
    (
        "override expired",
        {"overrides": {"shop": ComponentOverride("shop", "major_outage", "mia", NOW)}},
        "shop",
        "operational",
    ),
]


@pytest.mark.parametrize(
    ("inputs", "component", "state"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_state_table(inputs: dict[str, Any], component: str, state: str) -> None:
    states = component_states(
        PAGE,
        inputs.get("incidents", []),
        inputs.get("maintenances", []),
        inputs.get("overrides", {}),
        NOW,
    )
    assert states[component].state == state


def test_causes_are_recorded_and_overall_is_the_worst() -> None:
    states = component_states(
        PAGE,
        [IncidentImpact("i2", "search", "low"), IncidentImpact("i1", "checkout", "low")],
        [WORK],
        {"shop": ComponentOverride("shop", "degraded_performance", "mia")},
        NOW,
    )
    assert states["shop"].incident_ids == ("i1", "i2") and states["shop"].overridden_by == "mia"
    assert states["pay"].maintenance_ids == ("m-1",)
    assert overall_state(states.values()) == "degraded_performance"
    assert overall_state([]) == "operational"


def test_config_errors_name_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        StatusPage.model_validate(
            {
                "components": [{"id": "x", "name": "X", "services": []}],
                "impact": {"high": "on_fire"},
            }
        )
    locs = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert {"components.0.services", "impact.high"} <= locs


def test_an_impact_is_one_of_statuspages_or_cleared() -> None:
    assert parse_impact("major_outage") == "major_outage"
    assert parse_impact(" operational ") == "operational"
    assert parse_impact("") is None  # cleared: follows the urgency
    with pytest.raises(ValueError, match=r"^impact: 'under_maintenance' is not one of"):
        parse_impact("under_maintenance")  # maintenance is not an incident's impact
