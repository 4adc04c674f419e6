"""The deploy gate as a table: each rule's outcome and reason, dry run, overrides, validity."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from tocsin_common.change.gate import (
    AdHocFreeze,
    ErrorBudget,
    GateError,
    GateRequest,
    GateRules,
    GateState,
    InFlightChange,
    OnCallPerson,
    OpenIncident,
    evaluate,
    make_override,
    with_override,
)
from tocsin_common.config.change_control import ChangeControl

PRIORITIES = ("P1", "P2", "P3", "P4")
# A Wednesday, 12:00 UTC (13:00 in Berlin).
NOW = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)
REQUEST = GateRequest(
    service="checkout", environment="production", version="1.2.3", change_id="c-9"
)


def rules(*gates: dict[str, Any], **settings: Any) -> GateRules:
    section = ChangeControl.model_validate({"gates": list(gates), **settings})
    return GateRules.for_request(section, REQUEST, PRIORITIES)


def gate(**fields: Any) -> dict[str, Any]:
    return {"id": "prod", "environments": ["production"], **fields}


AWAKE = OnCallPerson("alice", "Europe/Berlin")
ASLEEP = OnCallPerson("bob", "Asia/Tokyo")  # 21:00 in Tokyo: before the default 22:00
NIGHT_OWL = OnCallPerson("carol", "Europe/Berlin", (time(12, 30), time(14, 0)))

CASES: list[tuple[str, dict[str, Any], GateState, str, str, str]] = [
    # (name, gate fields, state, rule, outcome, fragment of the reason)
    ("no rules", {}, GateState(), "gates", "pass", "no gate rule applies"),
    (
        "inside a weekly freeze",
        {
            "freeze_windows": [
                {
                    "name": "mid-week",
                    "cron": "0 9 * * wed",
                    "duration": "8h",
                    "time_zone": "Europe/Berlin",
                    "reason": "release train",
                }
            ]
        },
        GateState(),
        "prod.freeze_window:mid-week",
        "fail",
        "in freeze window 'mid-week' until 2026-03-25 17:00 Europe/Berlin: release train",
    ),
    (
        "freeze that warns",
        {
            "freeze_windows": [
                {
                    "name": "soft",
                    "cron": "0 9 * * wed",
                    "duration": "8h",
                    "time_zone": "Europe/Berlin",
                    "outcome": "warn",
                }
            ]
        },
        GateState(),
        "prod.freeze_window:soft",
        "warn",
        "in freeze window 'soft'",
    ),
    (
        "outside the freeze (its zone decides: 09:00 New York is 13:00 UTC)",
        {
            "freeze_windows": [
                {
                    "name": "ny",
                    "cron": "0 9 * * wed",
                    "duration": "1h",
                    "time_zone": "America/New_York",
                }
            ]
        },
        GateState(),
        "prod.freeze_window:ny",
        "pass",
        "outside freeze window 'ny'",
    ),
    (
        "ad-hoc freeze with author and reason",
        {},
        GateState(
            freezes=(
                AdHocFreeze(
                    "f-1",
                    NOW - timedelta(hours=1),
                    NOW + timedelta(hours=1),
                    "dana",
                    "Black Friday",
                    frozenset({"checkout"}),
                ),
            )
        ),
        "adhoc_freeze:f-1",
        "fail",
        "frozen by dana until 2026-03-25T13:00:00Z: Black Friday",
    ),
    (
        "open P1 on the service",
        {"open_incidents": {"fail_at": {"priority": "P2"}, "warn_at": {"priority": "P4"}}},
        GateState(open_incidents=(OpenIncident("i-1", "checkout", "high", "P1"),)),
        "prod.open_incidents",
        "fail",
        "incident i-1 (priority P1) is open on the service",
    ),
    (
        "open P3 warns",
        {"open_incidents": {"fail_at": {"priority": "P2"}, "warn_at": {"priority": "P4"}}},
        GateState(open_incidents=(OpenIncident("i-1", "checkout", "low", "P3"),)),
        "prod.open_incidents",
        "warn",
        "incident i-1 (priority P3)",
    ),
    (
        "open P2 on a dependency",
        {"open_incidents": {"fail_at": {"priority": "P2"}}},
        GateState(
            open_incidents=(OpenIncident("i-2", "payments", "high", "P2"),),
            dependencies={"checkout": ("payments", "ledger")},
        ),
        "prod.open_incidents",
        "fail",
        "incident i-2 (priority P2) is open on dependency 'payments'",
    ),
    (
        "dependencies left out",
        {"open_incidents": {"fail_at": {"priority": "P2"}, "include_dependencies": False}},
        GateState(
            open_incidents=(OpenIncident("i-2", "payments", "high", "P1"),),
            dependencies={"checkout": ("payments",)},
        ),
        "prod.open_incidents",
        "pass",
        "no open incident at the threshold on the service",
    ),
    (
        "by urgency, without priorities",
        {"open_incidents": {"fail_at": {"urgency": "high"}, "warn_at": {"urgency": "low"}}},
        GateState(open_incidents=(OpenIncident("i-3", "checkout", "low"),)),
        "prod.open_incidents",
        "warn",
        "incident i-3 (urgency low)",
    ),
    (
        "an unknown priority cannot be checked",
        {"open_incidents": {"fail_at": {"priority": "SEV1"}}},
        GateState(),
        "prod.open_incidents:priority",
        "warn",
        "priority 'SEV1' is not one of insight.priorities (P1, P2, P3, P4)",
    ),
    (
        "error budget exhausted",
        {"error_budget": {"fail_below_percent": 5, "warn_below_percent": 25}},
        GateState(error_budgets={"checkout": ErrorBudget(remaining_percent=2.5)}),
        "prod.error_budget",
        "fail",
        "2.5% of the error budget left, below 5%",
    ),
    (
        "burn rate warns",
        {"error_budget": {"fail_above_burn_rate": 10, "warn_above_burn_rate": 2}},
        GateState(error_budgets={"checkout": ErrorBudget(burn_rate=3.0)}),
        "prod.error_budget",
        "warn",
        "burn rate 3 above 2",
    ),
    (
        "budget healthy",
        {"error_budget": {"fail_below_percent": 5, "fail_above_burn_rate": 10}},
        GateState(error_budgets={"checkout": ErrorBudget(80.0, 0.5)}),
        "prod.error_budget",
        "pass",
        "80% of the error budget left, burn rate 0.5",
    ),
    (
        "budget unknown",
        {"error_budget": {"fail_below_percent": 5, "when_unknown": "fail"}},
        GateState(),
        "prod.error_budget",
        "fail",
        "no error budget left known for 'checkout'",
    ),
    (
        "nobody on call",
        {"on_call": {}},
        GateState(on_call={"checkout": ()}),
        "prod.on_call",
        "fail",
        "nobody is on call for 'checkout'",
    ),
    (
        "on call and awake",
        {"on_call": {}},
        GateState(on_call={"checkout": (AWAKE, ASLEEP)}),
        "prod.on_call",
        "pass",
        "on call and awake: alice",
    ),
    (
        "everyone on call asleep (Tokyo 21:00 is not asleep by default; carol naps)",
        {"on_call": {"all_asleep": "fail"}},
        GateState(on_call={"checkout": (NIGHT_OWL,)}),
        "prod.on_call",
        "fail",
        "everyone on call is in their sleep hours: carol (Europe/Berlin)",
    ),
    (
        "another change in flight",
        {"changes_in_flight": {}},
        GateState(
            changes_in_flight=(
                InFlightChange("c-1", "checkout", "production", NOW - timedelta(minutes=10)),
                InFlightChange("c-9", "checkout", "production", NOW),  # the request's own change
            )
        ),
        "prod.changes_in_flight",
        "fail",
        "another change is in flight: c-1 (started 2026-03-25T11:50:00Z)",
    ),
    (
        "a stale change is ignored, said so",
        {"changes_in_flight": {"stale_after": "1h"}},
        GateState(
            changes_in_flight=(
                InFlightChange("c-1", "checkout", "production", NOW - timedelta(hours=3)),
            )
        ),
        "prod.changes_in_flight",
        "pass",
        "no other change in flight; ignored as stale: c-1",
    ),
    (
        "a change in another environment",
        {"changes_in_flight": {}},
        GateState(
            changes_in_flight=(
                InFlightChange("c-1", "checkout", "staging", NOW - timedelta(minutes=1)),
            )
        ),
        "prod.changes_in_flight",
        "pass",
        "no other change in flight",
    ),
    (
        "on call unknown (escalation did not answer) warns, never 'nobody on call'",
        {"on_call": {"nobody_on_call": "fail"}},
        GateState(unknown={"on_call": "escalation did not say (UNAVAILABLE)"}),
        "prod.on_call",
        "warn",
        "who is on call is unknown: escalation did not say (UNAVAILABLE)",
    ),
    (
        "changes in flight unknown warns",
        {"changes_in_flight": {}},
        GateState(unknown={"changes_in_flight": "insight is replaying its facts"}),
        "prod.changes_in_flight",
        "warn",
        "changes in flight are unknown: insight is replaying its facts",
    ),
]


@pytest.mark.parametrize(
    ("fields", "state", "rule", "outcome", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rule_table(
    fields: dict[str, Any], state: GateState, rule: str, outcome: str, fragment: str
) -> None:
    gates = [gate(**fields)] if fields else []
    decision = evaluate(REQUEST, state, rules(*gates), NOW)
    found = {r.rule: r for r in decision.results}
    assert rule in found, decision.results
    assert found[rule].outcome == outcome
    assert fragment in found[rule].reason
    assert decision.outcome == decision.evaluated_outcome == outcome


def test_worst_rule_decides_and_every_rule_is_listed() -> None:
    state = GateState(
        open_incidents=(OpenIncident("i-1", "checkout", "low", "P3"),),
        on_call={"checkout": (AWAKE,)},
        error_budgets={"checkout": ErrorBudget(1.0, 0.1)},
    )
    decision = evaluate(
        REQUEST,
        state,
        rules(
            gate(
                open_incidents={"warn_at": {"priority": "P3"}},
                on_call={},
                error_budget={"fail_below_percent": 5},
            )
        ),
        NOW,
    )
    assert [(r.rule, r.outcome) for r in decision.results] == [
        ("prod.open_incidents", "warn"),
        ("prod.error_budget", "fail"),
        ("prod.on_call", "pass"),
    ]
    assert decision.outcome == "fail"


def test_gates_apply_by_service_and_environment() -> None:
    section = ChangeControl.model_validate(
        {
            "gates": [
                {
                    "id": "everything",
                    "freeze_windows": [{"name": "x", "cron": "@daily", "duration": "1d"}],
                },
                {"id": "search-only", "services": ["search"], "on_call": {}},
                {"id": "staging", "environments": ["staging"], "on_call": {}},
            ]
        }
    )
    chosen = GateRules.for_request(section, REQUEST)
    assert [g.id for g in chosen.gates] == ["everything"]
    decision = evaluate(REQUEST, GateState(), chosen, NOW)
    assert decision.outcome == "fail"  # a daily freeze of a whole day never ends


def test_freeze_window_across_dst_uses_elapsed_duration() -> None:
    # Friday 18:00 CET + 63h: DST starts on Sunday, so it ends Monday 10:00 CEST (08:00 UTC).
    weekend = rules(
        gate(
            freeze_windows=[
                {
                    "name": "weekend",
                    "cron": "0 18 * * fri",
                    "duration": "63h",
                    "time_zone": "Europe/Berlin",
                }
            ]
        )
    )
    inside = datetime(2026, 3, 30, 7, 59, tzinfo=UTC)
    after = datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    first = evaluate(REQUEST, GateState(), weekend, inside)
    assert first.outcome == "fail"
    assert "until 2026-03-30 10:00 Europe/Berlin" in first.results[0].reason
    assert first.valid_until == after  # the answer changes when the freeze ends
    assert evaluate(REQUEST, GateState(), weekend, after).outcome == "pass"
    before = datetime(2026, 3, 27, 16, 59, tzinfo=UTC)
    assert evaluate(REQUEST, GateState(), weekend, before).outcome == "pass"
    assert evaluate(REQUEST, GateState(), weekend, before + timedelta(minutes=1)).outcome == "fail"


def test_validity_is_cut_short_by_the_next_boundary() -> None:
    soon = rules(
        gate(freeze_windows=[{"name": "n", "cron": "5 12 * * *", "duration": "1h"}]),
        decision_ttl="10m",
    )
    decision = evaluate(REQUEST, GateState(), soon, NOW)
    assert decision.outcome == "pass"
    assert decision.valid_until == NOW + timedelta(minutes=5)
    far = rules(gate(freeze_windows=[{"name": "n", "cron": "0 0 1 1 *", "duration": "1h"}]))
    assert evaluate(REQUEST, GateState(), far, NOW).valid_until == NOW + timedelta(minutes=5)
    freeze = AdHocFreeze("f", NOW + timedelta(minutes=2), NOW + timedelta(hours=1), "d", "r")
    later = evaluate(REQUEST, GateState(freezes=(freeze,)), rules(), NOW)
    assert later.outcome == "pass" and later.valid_until == NOW + timedelta(minutes=2)


def test_dry_run_passes_but_reports_what_the_rules_said() -> None:
    request = GateRequest("checkout", "production", "1.2.3", dry_run=True)
    decision = evaluate(request, GateState(on_call={}), rules(gate(on_call={})), NOW)
    assert (decision.outcome, decision.evaluated_outcome, decision.dry_run) == (
        "pass",
        "fail",
        True,
    )
    with pytest.raises(GateError, match="a dry run decides nothing"):
        make_override(decision, "mia", "hotfix", NOW, timedelta(hours=1))


def test_override_passes_later_evaluations_until_it_expires() -> None:
    failing = rules(gate(on_call={}))
    decision = evaluate(REQUEST, GateState(), failing, NOW)
    assert decision.outcome == "fail"
    override = make_override(decision, "mia", " hotfix for INC-7 ", NOW, timedelta(hours=1))
    assert (override.actor, override.reason, override.overridden_outcome) == (
        "mia",
        "hotfix for INC-7",
        "fail",
    )
    assert with_override(decision, override).outcome == "pass"
    state = GateState(overrides=(override,))
    later = evaluate(REQUEST, state, failing, NOW + timedelta(minutes=30))
    assert (later.outcome, later.evaluated_outcome) == ("pass", "fail")
    assert later.override == override
    assert later.valid_until == NOW + timedelta(minutes=35)  # the TTL; expiry is later
    other_version = GateRequest("checkout", "production", "1.2.4")
    assert evaluate(other_version, state, failing, NOW).outcome == "fail"
    assert evaluate(REQUEST, state, failing, NOW + timedelta(hours=1)).outcome == "fail"


@pytest.mark.parametrize(
    ("actor", "reason", "fragment"),
    [
        ("", "why", "actor: is required"),
        ("mia", " ", "reason: is required"),
        ("mia", "x" * 1001, "reason: 1,001 characters"),
    ],
)
def test_override_needs_actor_and_reason(actor: str, reason: str, fragment: str) -> None:
    decision = evaluate(REQUEST, GateState(), rules(gate(on_call={})), NOW)
    with pytest.raises(GateError, match=fragment):
        make_override(decision, actor, reason, NOW, timedelta(hours=1))


def test_a_passing_decision_cannot_be_overridden() -> None:
    decision = evaluate(REQUEST, GateState(), rules(), NOW)
    with pytest.raises(GateError, match="nothing to override"):
        make_override(decision, "mia", "why", NOW, timedelta(hours=1))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"service": ""}, "service: is required"),
        ({"environment": " "}, "environment: is required"),
        ({"version": "v" * 256}, "version: longer than 255"),
    ],
)
def test_request_fields_are_checked(fields: dict[str, str], fragment: str) -> None:
    values = {"service": "checkout", "environment": "production", **fields}
    with pytest.raises(GateError, match=fragment):
        GateRequest(**values)


def test_response_shape_for_rest_and_argo_rollouts() -> None:
    decision = evaluate(REQUEST, GateState(on_call={}), rules(gate(on_call={})), NOW)
    body = decision.to_dict()
    # Argo Rollouts' web provider reads `jsonPath: "{$.outcome}"`.
    assert body["outcome"] == "fail" and body["passed"] is False
    assert body["rules"] == [
        {"rule": "prod.on_call", "outcome": "fail", "reason": "nobody is on call for 'checkout'"}
    ]
    assert body["evaluated_at"] == "2026-03-25T12:00:00Z"
    assert body["valid_until"] == "2026-03-25T12:05:00Z"
    assert body["evaluation_id"].startswith("gate-") and body["override"] is None
    again = evaluate(REQUEST, GateState(on_call={}), rules(gate(on_call={})), NOW)
    assert again.evaluation_id == decision.evaluation_id  # derived: same request, same instant
    given = GateRequest("checkout", "production", evaluation_id="e-1")
    assert evaluate(given, GateState(), rules(), NOW).evaluation_id == "e-1"


def test_naive_now_is_refused() -> None:
    with pytest.raises(GateError, match="now: must be timezone-aware"):
        evaluate(REQUEST, GateState(), rules(), NOW.replace(tzinfo=None))
