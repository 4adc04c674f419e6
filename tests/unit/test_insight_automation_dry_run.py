"""insight's edge of the automation dry run (docs/automation.md#dry-run): which rule and
window a request names, a stored incident as the dry run's input, and agreement with the
live path (escalation's lifecycle.automation) on the same incidents."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.automation.dry_run import dry_run
from tocsin_common.config import parse_config
from tocsin_escalation import lifecycle
from tocsin_insight.automation_dry_run import (
    DEFAULT_WINDOW,
    DryRunError,
    NotFound,
    label_filter,
    past_incident,
    rule_of,
    window_of,
)

E = incident_pb2
NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)

CONFIG = parse_config(
    textwrap.dedent(
        """\
        version: 1
        services:
          - {id: web, name: Web, escalation_policy: ladder}
          - {id: db, name: DB, escalation_policy: ladder}
        users:
          - id: alice
            name: Alice
            email: alice@example.com
            contact_methods: [{id: hook, type: webhook, address: "http://x/alice"}]
            notification_rules:
              high: [{delay: 0s, contact_method: hook}]
        escalation_policies:
          - id: ladder
            name: Ladder
            levels:
              - {delay: 5m, targets: [{type: user, id: alice}]}
              - {delay: 10m, targets: [{type: user, id: alice}]}
        automation:
          rules:
            - id: oom
              matchers: ['service="web"', 'alertname=~"OOM.*"', 'severity="critical"']
              "on": [triggered, "level 2", resolved]
              action: {type: incident, command: note, text: "see the runbook"}
        """
    ),
    "tocsin.yaml",
)


def row(
    incident_id: str,
    service: str,
    created: datetime,
    *,
    labels: dict[str, str] | None = None,
    severity: str = "critical",
    priority: str = "",
    acked: datetime | None = None,
    resolved: datetime | None = None,
    suppressed: bool = False,
    escalated: tuple[tuple[datetime, str], ...] = (),
) -> tuple[object, ...]:
    """A row as read_past_incidents selects it."""
    return (
        incident_id,
        service,
        "title",
        "high",
        severity,
        priority,
        "resolved" if resolved else "triggered",
        labels or {},
        created,
        acked,
        resolved,
        suppressed,
        [at for at, _ in escalated] or None,
        [m for _, m in escalated] or None,
    )


def test_rule_by_id_or_as_written_in_the_config() -> None:
    assert rule_of(CONFIG, "oom", "").id == "oom"
    written = {
        "id": "adhoc",
        "on": ["triggered"],
        "action": {"type": "incident", "command": "resolve"},
    }
    assert rule_of(CONFIG, "", json.dumps(written)).id == "adhoc"


@pytest.mark.parametrize(
    ("rule_id", "rule_json", "error"),
    [
        ("", "", "rule_id, rule: give exactly one"),
        ("x" * 256, "", "rule_id: 256 characters, at most 255"),
        ("", "[" * 50_000 + "]" * 50_000, "rule: nested too deeply"),
        ("oom", "{}", "rule_id, rule: give exactly one"),
        ("", "[1]", "rule: expected a mapping"),
        ("", "{nope", "rule: not JSON"),
        (
            "",
            json.dumps({"id": "x", "action": {"type": "incident", "command": "resolve"}}),
            "rule.on:",
        ),
        (
            "",
            json.dumps(
                {"id": "x", "on": ["level 0"], "action": {"type": "incident", "command": "resolve"}}
            ),
            "rule.on.0",
        ),
        (
            "",
            json.dumps({"id": "x", "on": ["triggered"], "action": {}, "pad": "x" * 200_000}),
            "over 200,000 bytes",
        ),
    ],
)
def test_bad_rules_name_the_field(rule_id: str, rule_json: str, error: str) -> None:
    with pytest.raises(DryRunError, match=error.replace("(", r"\(")):
        rule_of(CONFIG, rule_id, rule_json)


def test_an_unknown_rule_id_is_not_found() -> None:
    with pytest.raises(NotFound, match="rule_id: no automation rule 'gone'"):
        rule_of(CONFIG, "gone", "")


def test_window() -> None:
    assert window_of(None, None, NOW) == (NOW - DEFAULT_WINDOW, NOW)
    since = NOW - timedelta(days=7)
    assert window_of(since, None, NOW) == (since, NOW)
    with pytest.raises(DryRunError, match="until: must be after since"):
        window_of(NOW, NOW, NOW)
    with pytest.raises(DryRunError, match="since: the window is over 366 days"):
        window_of(NOW - timedelta(days=367), NOW, NOW)


def test_a_row_as_the_dry_runs_input() -> None:
    t = NOW - timedelta(days=1)
    found = past_incident(
        row(
            "i1",
            "web",
            t,
            labels={"alertname": "OOMKilled"},
            severity="unspecified",
            escalated=(
                (t, "escalated to level 1: paged alice"),
                (
                    t + timedelta(minutes=5),
                    "released upstream; escalated to level 2 (repeat 1): paged alice",
                ),
                (t + timedelta(minutes=6), "something else"),
            ),
        )
    )
    assert found.facts.severity == "" and found.facts.labels == {"alertname": "OOMKilled"}
    assert found.facts.priority == ""
    # The fact's priority (a command's, else insight.priorities') is what rules match.
    assert past_incident(row("i2", "web", t, priority="P2")).facts.priority == "P2"
    assert found.levels == ((1, t), (2, t + timedelta(minutes=5)))


def _incident(service: str, labels: dict[str, str], suppressed: bool) -> incident_pb2.Incident:
    i = incident_pb2.Incident(
        incident_id="x", service_id=service, title="title", urgency=E.URGENCY_HIGH,
        severity=alert_pb2.SEVERITY_CRITICAL, suppressed=suppressed,
    )  # fmt: skip
    i.labels.update(labels)
    return i


def test_the_dry_run_counts_what_the_live_path_fires() -> None:
    """The same incidents through escalation's automation decision, transition by transition,
    and through the dry run over their stored rows: the same firings."""
    t = NOW - timedelta(days=2)
    cases = [
        ("web", {"alertname": "OOMKilled"}, False, True, True),
        ("web", {"alertname": "OOMKilled"}, True, True, True),  # suppressed
        ("web", {"alertname": "Disk"}, False, True, False),
        ("db", {"alertname": "OOMKilled", "service": "web"}, False, True, True),
        ("web", {"alertname": "OOMKiller"}, False, False, True),
    ]
    rows, live = [], 0
    for n, (service, labels, suppressed, resolved, level2) in enumerate(cases):
        incident = _incident(service, labels, suppressed)
        live += len(lifecycle.automation(CONFIG, incident, "triggered", t).actions)
        live += len(lifecycle.automation(CONFIG, incident, "level", t, 1).actions)
        escalated = [(t, "escalated to level 1: paged alice")]
        if level2:
            live += len(lifecycle.automation(CONFIG, incident, "level", t, 2).actions)
            escalated.append((t + timedelta(minutes=5), "escalated to level 2: paged alice"))
        if resolved:
            live += len(lifecycle.automation(CONFIG, incident, "resolved", t).actions)
        rows.append(
            row(
                f"i{n}",
                service,
                t,
                labels=labels,
                resolved=t + timedelta(minutes=30) if resolved else None,
                suppressed=suppressed,
                escalated=tuple(escalated),
            )
        )
    (rule,) = CONFIG.automation.rules
    result = dry_run(rule, [past_incident(r) for r in rows], NOW - DEFAULT_WINDOW, NOW)
    assert live == 5  # i0: triggered, level 2, resolved; i4: triggered, level 2
    assert result.fires == live
    assert result.by_trigger == {"level 2": 2, "resolved": 1, "triggered": 2}
    assert result.sample == ("i0", "i4")


def test_the_label_equalities_the_database_can_rule_out() -> None:
    """Only a label's `=` with a value: a missing label is "" to a matcher, and the four
    fields are columns of their own that win over labels."""
    rule = rule_of(
        CONFIG,
        "",
        json.dumps(
            {
                "id": "x",
                "matchers": [
                    'alertname="OOMKilled"',
                    'namespace=""',
                    'pod=~"web-.*"',
                    'team!="db"',
                    'service="web"',
                    'severity="critical"',
                ],
                "on": ["triggered"],
                "action": {"type": "incident", "command": "resolve"},
            }
        ),
    )
    assert label_filter(rule) == {"alertname": "OOMKilled"}
    assert label_filter(CONFIG.automation.rules[0]) == {}
