"""Automation rules: config validation, which rules fire for which trigger, idempotency
keys, rendered actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from tocsin_common.automation.rules import (
    AutomationError,
    IncidentFacts,
    Transition,
    idempotency_key,
    label_set,
    matching_rules,
    plan,
)
from tocsin_common.config.automation import Automation, AutomationRule

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
NOTE = {"type": "incident", "command": "note", "text": "seen"}


def rule(**fields: Any) -> AutomationRule:
    return AutomationRule.model_validate({"id": "r", "on": ["triggered"], "action": NOTE, **fields})


INCIDENT = IncidentFacts(
    incident_id="inc-1",
    service="checkout",
    title='Disk "full" on db-1',
    urgency="high",
    severity="critical",
    priority="P1",
    labels={"team": "sre", "service": "ignored-label", "region": "eu-west-1"},
)

MATCH_CASES = [
    # (rule fields, transition, fires)
    ({}, Transition(INCIDENT, "triggered"), True),
    ({}, Transition(INCIDENT, "resolved"), False),
    ({"on": ["acknowledged", "resolved"]}, Transition(INCIDENT, "resolved"), True),
    ({"on": ["level 2"]}, Transition(INCIDENT, "level", 2), True),
    ({"on": ["level 2"]}, Transition(INCIDENT, "level", 1), False),
    ({"on": ["level 2"]}, Transition(INCIDENT, "triggered"), False),
    ({"matchers": ['service="checkout"']}, Transition(INCIDENT, "triggered"), True),
    ({"matchers": ['service="ignored-label"']}, Transition(INCIDENT, "triggered"), False),
    ({"matchers": ['urgency="high"', 'team=~"sre|dba"']}, Transition(INCIDENT, "triggered"), True),
    ({"matchers": ['urgency="low"']}, Transition(INCIDENT, "triggered"), False),
    ({"matchers": ['region!~"us-.*"', 'priority="P1"']}, Transition(INCIDENT, "triggered"), True),
    ({"matchers": ['missing=""']}, Transition(INCIDENT, "triggered"), True),
    ({"enabled": False}, Transition(INCIDENT, "triggered"), False),
]


@pytest.mark.parametrize(("fields", "transition", "fires"), MATCH_CASES)
def test_matching_table(fields: dict[str, Any], transition: Transition, fires: bool) -> None:
    assert bool(matching_rules([rule(**fields)], transition)) is fires


def test_every_matching_rule_fires_in_order() -> None:
    rules = [rule(id="a"), rule(id="b", matchers=['urgency="low"']), rule(id="c")]
    assert [r.id for r in matching_rules(rules, Transition(INCIDENT, "triggered"))] == ["a", "c"]


def test_label_set_lets_incident_fields_win() -> None:
    labels = label_set(INCIDENT)
    assert labels["service"] == "checkout" and labels["team"] == "sre"
    assert labels["priority"] == "P1"


def test_idempotency_key_per_incident_rule_and_trigger() -> None:
    key = idempotency_key("inc-1", "r", "level 2")
    assert key == "automation/inc-1/r/level-2"
    assert key == idempotency_key("inc-1", "r", "level 2")
    others = {
        idempotency_key("inc-2", "r", "level 2"),
        idempotency_key("inc-1", "s", "level 2"),
        idempotency_key("inc-1", "r", "level 3"),
        idempotency_key("inc-1", "r", "resolved"),
    }
    assert len(others) == 4 and key not in others
    long = idempotency_key("i" * 200, "r", "triggered")
    assert long.startswith("automation/") and len(long) == len("automation/") + 40
    assert idempotency_key("a/b", "c", "resolved") != idempotency_key("a", "b/c", "resolved")


def test_http_plan_renders_the_body_with_json_escaping() -> None:
    http = rule(
        id="restart",
        on=["level 2"],
        requires_approval=True,
        action={
            "type": "http",
            "url": "https://rundeck.example.com/api/45/job/restart/run",
            "body": '{"title": {{ incident.title | tojson }}, "level": {{ level }},'
            ' "team": "{{ incident.labels.team }}"}',
        },
    )
    planned = plan(http, Transition(INCIDENT, "level", 2), NOW)
    assert planned.key == "automation/inc-1/restart/level-2"
    assert planned.requires_approval and planned.command is None
    assert planned.http is not None
    assert planned.http.body == '{"title": "Disk \\"full\\" on db-1", "level": 2, "team": "sre"}'
    assert (planned.http.method, planned.http.signed, planned.http.timeout_seconds) == (
        "POST",
        True,
        10.0,
    )


def test_incident_command_plans() -> None:
    note = plan(
        rule(action={**NOTE, "text": "runbook: {{ incident.service }}"}),
        Transition(INCIDENT, "triggered"),
        NOW,
    )
    assert note.command is not None and note.command.text == "runbook: checkout"
    bump = plan(
        rule(action={"type": "incident", "command": "priority", "priority": "P1"}),
        Transition(INCIDENT, "triggered"),
        NOW,
    )
    assert bump.command is not None and bump.command.priority == "P1"


def test_a_template_reading_what_is_not_there_names_the_rule_and_field() -> None:
    broken = rule(id="typo", action={**NOTE, "text": "{{ incident.titel }}"})
    with pytest.raises(AutomationError, match=r"automation rule 'typo': action\.text"):
        plan(broken, Transition(INCIDENT, "triggered"), NOW)


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    unsafe = rule(action={**NOTE, "text": "{{ incident.__class__.__mro__ }}"})
    with pytest.raises(AutomationError):
        plan(unsafe, Transition(INCIDENT, "triggered"), NOW)


@pytest.mark.parametrize(
    ("fields", "where", "fragment"),
    [
        ({"on": ["opened"]}, "on.0", "invalid trigger 'opened'"),
        ({"on": ["level 0"]}, "on.0", "invalid trigger"),
        ({"on": []}, "on", "at least 1"),
        ({"matchers": ['team=~"(a"']}, "matchers.0", "invalid regular expression"),
        ({"action": {"type": "shell"}}, "action", "does not match any of the expected tags"),
        ({"action": {"type": "http", "url": "ftp://x"}}, "action.http.url", "invalid URL"),
        (
            {"action": {"type": "http", "url": "https://x", "body": "{{ a "}},
            "action.http.body",
            "invalid template",
        ),
        (
            {"action": {"type": "incident", "command": "note"}},
            "action.incident",
            "a note needs text",
        ),
        (
            {"action": {"type": "incident", "command": "priority"}},
            "action.incident",
            "needs a priority",
        ),
        (
            {"action": {"type": "incident", "command": "resolve", "priority": "P1"}},
            "action.incident",
            "only for the priority command",
        ),
        ({"approval_ttl": "0s"}, "approval_ttl", ""),
    ],
)
def test_config_errors_name_the_field(fields: dict[str, Any], where: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        rule(**fields)
    errors = {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}
    assert any(k.startswith(where) and fragment in v for k, v in errors.items()), errors


def test_triggers_are_normalised() -> None:
    assert rule(on=[" level 7 ", "resolved"]).on == ("level 7", "resolved")
    assert Automation().rules == ()
