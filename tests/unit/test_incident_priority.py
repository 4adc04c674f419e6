"""The priority command's pure parts: what a priority may be, the automation action that
becomes the command, the config check of a rule's priority, what rules and insight see."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.config import parse_config
from tocsin_common.config.loader import ConfigError
from tocsin_common.priority import known_priorities, priority_problem
from tocsin_escalation import lifecycle
from tocsin_escalation.escalator import automation_record
from tocsin_insight.facts import Directory, fold_incident

E = incident_pb2
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

CONFIG = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: web, name: Web, escalation_policy: ladder}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
    escalation_policies:
      - id: ladder
        name: Ladder
        levels: [{delay: 5m, targets: [{type: user, id: alice}]}]
    insight:
      priorities:
        - {id: P1, severities: [critical]}
        - {id: P2, severities: [error]}
    automation:
      rules:
        - id: bump
          matchers: ['service="web"', 'priority!="P1"']
          "on": ["level 1"]
          action: {type: incident, command: priority, priority: PRIORITY}
    """
)


def test_a_priority_must_be_an_id_and_a_configured_one_when_any_are() -> None:
    assert priority_problem("P1", []) is None
    assert priority_problem("sev-2_b", []) is None
    assert priority_problem("", ["P1"]) == "priority: is required"
    bad = priority_problem("P 1", [])
    assert bad is not None and bad.startswith("priority: 'P 1' is not a priority id")
    assert priority_problem("-P", []) is not None and priority_problem("P" * 33, []) is not None
    assert priority_problem("P1", ["P1", "P2"]) is None
    assert priority_problem("P9", ["P1", "P2"]) == (
        "priority: 'P9' is not one of insight.priorities (P1, P2)"
    )
    assert known_priorities(["P1", "P2", "P1"]) == ["P1", "P2"]


def incident(priority: str = "") -> incident_pb2.Incident:
    return E.Incident(
        incident_id="inc-1",
        service_id="web",
        title="Disk full",
        status=E.INCIDENT_STATUS_TRIGGERED,
        urgency=E.URGENCY_HIGH,
        escalation_policy_id="ladder",
        priority=priority,
    )


def test_a_priority_action_is_a_priority_command_by_the_rule() -> None:
    config = parse_config(CONFIG.replace("PRIORITY", "P1"), "tocsin.yaml")
    [action] = lifecycle.automation(config, incident(), "level", T0, 1).actions
    topic, key, command = automation_record(incident(), action, T0)
    assert (topic.name, key) == ("incidents.commands", "web")
    assert isinstance(command, E.IncidentCommand)
    assert command.WhichOneof("command") == "priority"
    assert command.priority.priority == "P1"
    assert command.actor == "automation:bump"
    # Matchers see the incident's priority: once it is P1 the rule no longer fires.
    assert lifecycle.incident_facts(incident("P1")).priority == "P1"
    assert lifecycle.automation(config, incident("P1"), "level", T0, 1).actions == []


def test_a_rule_setting_a_priority_insight_does_not_know_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"sets priority 'P7', which is not one of"):
        parse_config(CONFIG.replace("PRIORITY", "P7"), "tocsin.yaml")


def test_insight_s_fact_carries_the_priority_a_command_set() -> None:
    directory = Directory(
        team_of=lambda s: "",
        zone_of=lambda u: "UTC",
        priority_of=lambda service, severity, urgency, labels: "P2",
    )
    opened = E.IncidentEvent(event_id="e1", type=E.INCIDENT_EVENT_TYPE_TRIGGERED)
    opened.incident.CopyFrom(incident())
    opened.at.FromDatetime(T0)
    fact = fold_incident(None, opened, directory)
    assert fact.priority == "P2"  # derived by insight.priorities
    changed = E.IncidentEvent(event_id="e2", type=E.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED)
    changed.incident.CopyFrom(incident("P1"))
    changed.at.FromDatetime(T0)
    assert fold_incident(fact, changed, directory).priority == "P1"
    first = fold_incident(None, changed, directory)
    assert first.priority == "P1"


def test_rules_match_the_priority_insight_priorities_gives_until_a_command_sets_one() -> None:
    """Without a command, an incident's priority is insight.priorities' (CONFIG: critical
    is P1), as insight's reports and the dry run see it; a command's wins."""
    config = parse_config(CONFIG.replace("PRIORITY", "P1"), "tocsin.yaml")
    critical = incident()
    critical.severity = alert_pb2.SEVERITY_CRITICAL
    assert lifecycle.incident_facts(critical, config).priority == "P1"
    # The rule (priority!="P1") does not fire for it, nor for a P2 a command made P1.
    assert lifecycle.automation(config, critical, "level", T0, 1).actions == []
    error = incident()
    error.severity = alert_pb2.SEVERITY_ERROR
    assert lifecycle.incident_facts(error, config).priority == "P2"
    assert len(lifecycle.automation(config, error, "level", T0, 1).actions) == 1
    error.priority = "P1"
    assert lifecycle.automation(config, error, "level", T0, 1).actions == []
    # No rule matches: no priority.
    assert lifecycle.incident_facts(incident(), config).priority == ""
