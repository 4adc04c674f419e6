"""Dry run of an automation rule over past incidents: "would have fired N times in 30 days"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin_common.automation.dry_run import PastIncident, Tally, dry_run, services_in_scope
from tocsin_common.automation.rules import IncidentFacts
from tocsin_common.config.automation import AutomationRule

UNTIL = datetime(2026, 6, 30, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=30)


def rule(**fields: Any) -> AutomationRule:
    return AutomationRule.model_validate(
        {"id": "r", "action": {"type": "incident", "command": "resolve"}, **fields}
    )


def past(
    incident_id: str, service: str, urgency: str, days_ago: float, **times: Any
) -> PastIncident:
    at = UNTIL - timedelta(days=days_ago)
    facts = IncidentFacts(incident_id, service, "t", urgency)
    values: dict[str, Any] = {}
    for name, minutes in times.items():
        if name == "levels":
            values["levels"] = tuple((lvl, at + timedelta(minutes=m)) for lvl, m in minutes)
        else:
            values[name] = at + timedelta(minutes=minutes)
    return PastIncident(facts, at, **values)


HISTORY = [
    past("a", "checkout", "high", 1, acknowledged_at=5, resolved_at=30, levels=[(1, 0), (2, 10)]),
    past("b", "checkout", "low", 2, resolved_at=60),
    past("c", "search", "high", 3, levels=[(1, 0), (2, 10), (1, 20), (2, 30)]),  # repeat: once
    past("d", "checkout", "high", 45, resolved_at=10),  # before the window
]


def test_counts_each_firing_once_within_the_window() -> None:
    result = dry_run(rule(on=["triggered"]), HISTORY, SINCE, UNTIL)
    assert (result.fires, result.incidents) == (3, 3)
    assert result.summary == "rule 'r' would have fired 3 times in 30 days"
    assert result.sample == ("a", "b", "c")


def test_level_triggers_fire_once_per_incident_even_when_the_policy_repeats() -> None:
    result = dry_run(rule(on=["level 2"]), HISTORY, SINCE, UNTIL)
    assert (result.fires, result.by_trigger) == (2, {"level 2": 2})


def test_matchers_and_several_triggers() -> None:
    result = dry_run(
        rule(on=["triggered", "resolved"], matchers=['service="checkout"', 'urgency="high"']),
        HISTORY,
        SINCE,
        UNTIL,
    )
    assert (result.fires, result.incidents) == (2, 1)
    assert result.by_trigger == {"resolved": 1, "triggered": 1}
    assert dry_run(rule(on=["resolved"], enabled=False), HISTORY, SINCE, UNTIL).fires == 2


def test_nothing_fires() -> None:
    result = dry_run(rule(on=["acknowledged"], matchers=['service="nope"']), HISTORY, SINCE, UNTIL)
    assert (result.fires, result.sample) == (0, ())
    assert result.summary.endswith("would have fired 0 times in 30 days")


def test_a_suppressed_incident_fires_nothing() -> None:
    """The live path runs no rule for a suppressed incident (escalation's automation)."""
    hushed = PastIncident(
        IncidentFacts("s", "checkout", "t", "high"),
        UNTIL - timedelta(days=1),
        resolved_at=UNTIL - timedelta(hours=1),
        suppressed=True,
    )
    assert dry_run(rule(on=["triggered", "resolved"]), [*HISTORY, hushed], SINCE, UNTIL).fires == 5


def test_labels_are_matched_as_live() -> None:
    """Labels and the four fields (which win over labels of the same name)."""
    at = UNTIL - timedelta(days=1)
    incidents = [
        PastIncident(
            IncidentFacts("x", "checkout", "t", "high", labels={"alertname": "OOMKilled"}), at
        ),
        PastIncident(
            IncidentFacts("y", "checkout", "t", "high", labels={"alertname": "Other"}), at
        ),
        # a label `service` does not make it checkout
        PastIncident(IncidentFacts("z", "search", "t", "high", labels={"service": "checkout"}), at),
    ]
    found = dry_run(
        rule(on=["triggered"], matchers=['service="checkout"', 'alertname=~"OOM.*|Pod.*"']),
        incidents,
        SINCE,
        UNTIL,
    )
    assert (found.fires, found.sample) == (1, ("x",))


def test_services_in_scope() -> None:
    services = ["checkout", "checkout-eu", "search"]
    assert services_in_scope(rule(on=["triggered"]), services) is None
    assert services_in_scope(rule(on=["triggered"], matchers=['urgency="high"']), services) is None
    assert services_in_scope(
        rule(on=["triggered"], matchers=['service=~"checkout.*"', 'service!="checkout-eu"']),
        services,
    ) == ("checkout",)
    assert services_in_scope(rule(on=["triggered"], matchers=['service="gone"']), services) == ()


def test_the_summary_names_the_window_in_days_or_hours() -> None:
    def summary(hours: float) -> str:
        return dry_run(rule(on=["triggered"]), [], UNTIL - timedelta(hours=hours), UNTIL).summary

    assert summary(24 * 7).endswith("would have fired 0 times in 7 days")
    assert summary(24).endswith("in 1 day")
    assert summary(1.02).endswith("in 1 hour") and summary(0.2).endswith("in 1 hour")
    assert summary(5).endswith("in 5 hours")


def test_a_tally_fed_in_batches_counts_as_one_pass() -> None:
    many = [past(f"i{n:02d}", "checkout", "high", 1 + n / 100, resolved_at=5) for n in range(30)]
    whole = dry_run(rule(on=["triggered", "resolved"]), [*HISTORY, *many], SINCE, UNTIL)
    tally = Tally(rule(on=["triggered", "resolved"]), SINCE, UNTIL)
    for start in range(0, len(HISTORY) + len(many), 7):
        tally.add([*HISTORY, *many][start : start + 7])
    assert tally.result() == whole
    assert (whole.fires, whole.incidents, len(whole.sample)) == (65, 33, 20)
    assert whole.sample[:3] == ("a", "b", "c")
