"""The `insight:` section of the configuration: calendars, priorities, SLA policies, SLOs,
recurrence and change-failure rules; each bad value is reported at its field."""

from __future__ import annotations

import textwrap
from datetime import date, time, timedelta

import pytest
from tocsin_common.config import ConfigError, ConfigIssue, parse_config

BASE = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: checkout, name: Checkout, escalation_policy: pol, team: sre}
      - {id: payments, name: Payments, escalation_policy: pol, team: pay}
    teams:
      - {id: sre, name: SRE, members: [alice]}
      - {id: pay, name: Payments, members: [alice]}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
    escalation_policies:
      - id: pol
        name: Policy
        levels: [{delay: 5m, targets: [{type: user, id: alice}]}]
    """
)

GOOD = textwrap.dedent(
    """\
    insight:
      time_zone: Europe/Berlin
      calendars:
        - id: office
          time_zone: Europe/Berlin
          teams: [sre]
          hours:
            - {days: [Monday, tuesday, wednesday, thursday, friday], start: "09:00", end: "17:00"}
          holidays: [2026-12-25, "2026-12-26"]
        - id: nights
          time_zone: America/New_York
          teams: [pay]
          hours: [{days: [saturday], start: "22:00", end: "06:00"}]
      priorities:
        - {id: P1, severities: [critical], services: [checkout]}
        - {id: P2, severities: [critical, error]}
        - {id: P3, urgencies: [high]}
        - {id: P4}
      sla_policies:
        - {priority: P1, ack_target: 5m, resolve_target: 4h}
        - {priority: P3, ack_target: 1h, calendar: business}
        - {priority: P4, resolve_target: 5d, calendar: office}
      slos:
        - {service: checkout, availability_target: 99.9}
        - {service: payments, availability_target: 99.5, window: 7d}
      recurrence: {min_incidents: 4, window: 14d}
      change_failure: {window: 2h, include_dependents: false}
      interruptions: {channels: [sms, voice], merge_window: 2m}
    """
)


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "tocsin.yaml")
    return caught.value.issues


def issue_at(issues: list[ConfigIssue], path: str) -> ConfigIssue:
    matching = [i for i in issues if i.path == path]
    assert matching, f"no issue at {path}; got:\n" + "\n".join(map(str, issues))
    return matching[0]


def with_insight(body: str) -> str:
    return BASE + "insight:\n" + textwrap.indent(textwrap.dedent(body), "  ")


def test_good_section_loads_with_its_values() -> None:
    insight = parse_config(BASE + GOOD).insight
    office = insight.calendar("office")
    assert office.hours[0].days[0] == "monday"  # day names are case-insensitive
    assert (office.hours[0].start, office.hours[0].end) == (time(9), time(17))
    assert office.holidays == (date(2026, 12, 25), date(2026, 12, 26))
    assert insight.sla_policy("P1") is not None
    assert insight.sla_policy("P1").ack_target == timedelta(minutes=5)  # type: ignore[union-attr]
    assert insight.sla_policy("P2") is None
    assert insight.slo("payments").window == timedelta(days=7)  # type: ignore[union-attr]
    assert insight.slo("checkout").window == timedelta(days=30)  # type: ignore[union-attr]
    assert insight.recurrence.min_incidents == 4
    assert insight.change_failure.window == timedelta(hours=2)
    assert not insight.change_failure.include_dependents
    assert insight.interruptions.merge_window == timedelta(minutes=2)


def test_defaults_without_a_section() -> None:
    insight = parse_config(BASE).insight
    assert insight.time_zone == "UTC"
    assert insight.priorities == () and insight.sla_policies == () and insight.slos == ()
    assert insight.recurrence.min_incidents == 3
    assert insight.recurrence.window == timedelta(days=30)
    assert insight.change_failure.window == timedelta(hours=1)
    assert insight.interruptions.channels == ("sms", "voice", "slack", "teams")
    assert insight.priority_for("checkout", "critical", "high") is None


def test_priority_first_matching_rule_and_rank() -> None:
    insight = parse_config(BASE + GOOD).insight
    assert insight.priority_for("checkout", "critical", "high") == "P1"
    assert insight.priority_for("payments", "critical", "high") == "P2"  # P1 is checkout's
    assert insight.priority_for("payments", "warning", "high") == "P3"
    assert insight.priority_for("payments", "warning", "low") == "P4"
    assert insight.priority_for("payments", None, None) == "P4"
    assert [insight.priority_rank(p) for p in ("P1", "P4", "P9")] == [1, 4, None]


def test_sla_calendar_resolution() -> None:
    insight = parse_config(BASE + GOOD).insight
    p1, p3, p4 = (insight.sla_policy(p) for p in ("P1", "P3", "P4"))
    assert p1 is not None and p3 is not None and p4 is not None
    assert insight.sla_calendar(p1, "sre") is None  # 24x7
    assert insight.sla_calendar(p3, "sre").id == "office"  # type: ignore[union-attr]
    assert insight.sla_calendar(p3, "pay").id == "nights"  # type: ignore[union-attr]
    assert insight.sla_calendar(p4, "pay").id == "office"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ("time_zone: Europe/Berln\n", "insight.time_zone", "did you mean 'Europe/Berlin'"),
        (
            "calendars: [{id: c, time_zone: UTC, hours: []}]\n",
            "insight.calendars[0].hours",
            "must not be empty",
        ),
        (
            'calendars: [{id: c, time_zone: UTC, hours: [{days: [funday], start: "09:00",'
            ' end: "17:00"}]}]\n',
            "insight.calendars[0].hours[0].days[0]",
            "'monday'",
        ),
        (
            'calendars: [{id: c, time_zone: UTC, hours: [{days: [monday], start: "9am",'
            ' end: "17:00"}]}]\n',
            "insight.calendars[0].hours[0].start",
            "expected 'HH:MM'",
        ),
        (
            'calendars: [{id: c, time_zone: UTC, hours: [{days: [monday], start: "09:00",'
            ' end: "17:00"}], holidays: [2026-02-30]}]\n',
            "insight.calendars[0].holidays[0]",
            "expected YYYY-MM-DD",
        ),
        (
            'calendars: [{id: c, time_zone: UTC, hours: [{days: [monday], start: "09:00",'
            ' end: "17:00"}], holidays: [20261225]}]\n',
            "insight.calendars[0].holidays[0]",
            "expected YYYY-MM-DD",
        ),
        ("priorities: [{id: 'P 1'}]\n", "insight.priorities[0].id", "invalid priority id"),
        (
            "priorities: [{id: P1, severities: [fatal]}]\n",
            "insight.priorities[0].severities[0]",
            "'critical'",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies: [{priority: P1}]\n",
            "insight.sla_policies[0]",
            "set at least one",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies: [{priority: P1, ack_target: 0s}]\n",
            "insight.sla_policies[0].ack_target",
            "greater than 0",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies: [{priority: P1, ack_target: 5m,"
            " calendar: Office}]\n",
            "insight.sla_policies[0].calendar",
            "invalid id",
        ),
        (
            "slos: [{service: checkout, availability_target: 100}]\n",
            "insight.slos[0].availability_target",
            "between 0 and 100",
        ),
        (
            "slos: [{service: checkout, availability_target: 99.9, window: 36h}]\n",
            "insight.slos[0].window",
            "whole number of days",
        ),
        ("recurrence: {min_incidents: 1}\n", "insight.recurrence.min_incidents", "2"),
        ("change_failure: {window: soon}\n", "insight.change_failure.window", "duration"),
        (
            "interruptions: {channels: [Pager]}\n",
            "insight.interruptions.channels[0]",
            "invalid contact method type",
        ),
        (
            "priorities: [{id: P1, matchers: ['priority=~\"(\"']}]\n",
            "insight.priorities[0].matchers[0].value",
            "invalid regular expression",
        ),
        ("slo: []\n", "insight.slo", "did you mean 'slos'"),
    ],
)
def test_field_errors_name_the_field(body: str, path: str, words: str) -> None:
    issue = issue_at(issues_of(with_insight(body)), path)
    assert words in issue.message, issue.message


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        (
            "calendars: [{id: c, time_zone: UTC, teams: [ops], hours: [{days: [monday],"
            ' start: "09:00", end: "17:00"}]}]\n',
            "insight.calendars[0].teams[0]",
            "unknown team 'ops'",
        ),
        (
            "calendars:\n  - {id: c, time_zone: UTC, teams: [sre], hours: [{days: [monday],"
            ' start: "09:00", end: "17:00"}]}\n  - {id: d, time_zone: UTC, teams: [sre],'
            ' hours: [{days: [monday], start: "09:00", end: "17:00"}]}\n',
            "insight.calendars[1].teams[0]",
            "already has calendar 'c'",
        ),
        (
            "calendars:\n  - {id: c, time_zone: UTC, hours: [{days: [monday],"
            ' start: "09:00", end: "17:00"}]}\n  - {id: c, time_zone: UTC,'
            ' hours: [{days: [monday], start: "09:00", end: "17:00"}]}\n',
            "insight.calendars[1].id",
            "duplicate calendar id 'c'",
        ),
        (
            'calendars: [{id: c, time_zone: UTC, hours: [{days: [monday], start: "09:00",'
            ' end: "17:00"}], holidays: [2026-12-25, 2026-12-25]}]\n',
            "insight.calendars[0].holidays[1]",
            "more than once",
        ),
        ("default_calendar: office\n", "insight.default_calendar", "unknown calendar"),
        (
            "priorities: [{id: P1, services: [checkot]}]\n",
            "insight.priorities[0].services[0]",
            "did you mean 'checkout'",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies: [{priority: P2, ack_target: 5m}]\n",
            "insight.sla_policies[0].priority",
            "unknown priority 'P2'",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies:\n  - {priority: P1, ack_target: 5m}\n"
            "  - {priority: P1, ack_target: 9m}\n",
            "insight.sla_policies[1].priority",
            "already has an SLA policy",
        ),
        (
            "priorities: [{id: P1}]\nsla_policies: [{priority: P1, ack_target: 5m,"
            " calendar: office}]\n",
            "insight.sla_policies[0].calendar",
            "unknown calendar 'office'",
        ),
        (
            "calendars: [{id: c, time_zone: UTC, teams: [sre], hours: [{days: [monday],"
            ' start: "09:00", end: "17:00"}]}]\npriorities: [{id: P1}]\n'
            "sla_policies: [{priority: P1, ack_target: 5m, calendar: business}]\n",
            "insight.sla_policies[0].calendar",
            "'pay' have none",
        ),
        (
            "slos: [{service: search, availability_target: 99}]\n",
            "insight.slos[0].service",
            "unknown service 'search'",
        ),
        (
            "slos:\n  - {service: checkout, availability_target: 99}\n"
            "  - {service: checkout, availability_target: 98}\n",
            "insight.slos[1].service",
            "already has an SLO",
        ),
    ],
)
def test_cross_reference_errors(body: str, path: str, words: str) -> None:
    issue = issue_at(issues_of(with_insight(body)), path)
    assert words in issue.message, issue.message
    assert issue.line is not None


def test_business_calendar_satisfied_by_default_calendar() -> None:
    text = with_insight(
        'calendars: [{id: c, time_zone: UTC, hours: [{days: [monday], start: "09:00",'
        ' end: "17:00"}]}]\ndefault_calendar: c\npriorities: [{id: P1}]\n'
        "sla_policies: [{priority: P1, ack_target: 5m, calendar: business}]\n"
    )
    insight = parse_config(text).insight
    policy = insight.sla_policy("P1")
    assert policy is not None
    assert insight.sla_calendar(policy, "pay").id == "c"  # type: ignore[union-attr]


def test_priority_from_labels_and_repeated_ids() -> None:
    text = with_insight(
        "priorities:\n"
        "  - {id: P1, matchers: ['priority=\"P1\"']}\n"
        "  - {id: P2, severities: [critical]}\n"
        "  - {id: P1, services: [payments], urgencies: [high]}\n"
        "  - {id: P3}\n"
    )
    insight = parse_config(text).insight
    assert insight.priority_for("checkout", "info", "low", {"priority": "P1"}) == "P1"
    assert insight.priority_for("checkout", "critical", "high", {"priority": "P4"}) == "P2"
    assert insight.priority_for("payments", "warning", "high") == "P1"
    assert insight.priority_for("checkout", "warning", "high") == "P3"
    assert insight.priority_rank("P1") == 1 and insight.priority_rank("P2") == 2
    assert insight.priority_rank("P3") == 3  # distinct priorities: P1, P2, P3
