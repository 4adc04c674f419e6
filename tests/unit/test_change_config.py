"""The change_control, automation and status_page sections: loaded from the example, and
every mistake reported at its field (with its line)."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from tocsin_common.config import ConfigError, ConfigIssue, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
BASE = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: checkout, name: Checkout, escalation_policy: pol}
      - {id: payments, name: Payments, escalation_policy: pol}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
    escalation_policies:
      - id: pol
        name: Policy
        levels: [{delay: 5m, targets: [{type: user, id: alice}]}]
    """
)
SECTIONS = textwrap.dedent(
    """\
    change_control:
      gates:
        - id: prod
          services: [checkout]
          freeze_windows:
            - {name: weekend, cron: "0 18 * * fri", duration: 63h, time_zone: Europe/Berlin}
    automation:
      rules:
        - id: note
          on: [triggered]
          action: {type: incident, command: note, text: hi}
    status_page:
      components:
        - {id: shop, name: Shop, services: [checkout]}
    """
)


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "tocsin.yaml")
    return caught.value.issues


def test_example_uses_every_section() -> None:
    config = load_config(ROOT / "config" / "tocsin.example.yaml")
    gates = {g.id: g for g in config.change_control.gates}
    assert gates["production"].freeze_windows[0].duration == timedelta(hours=63)
    assert gates["production"].open_incidents is not None
    assert gates["checkout-budget"].error_budget is not None
    kinds = {r.action.type for r in config.automation.rules}
    assert kinds == {"http", "incident"}
    assert any(r.requires_approval for r in config.automation.rules)
    assert [c.name for c in config.status_page.components] == ["Web shop", "Payments"]


def test_sections_default_to_nothing() -> None:
    config = parse_config(BASE)
    assert config.change_control.gates == () and config.automation.rules == ()
    assert not config.status_page.enabled and config.status_page.components == ()


def test_valid_sections_load() -> None:
    config = parse_config(BASE + SECTIONS)
    assert config.change_control.gates[0].applies_to("checkout", "production")
    assert not config.change_control.gates[0].applies_to("payments", "production")


CASES = [
    # (replace, with, path, fragment)
    (
        'cron: "0 18 * * fri"',
        'cron: "0 18 * fri"',
        "change_control.gates[0].freeze_windows[0].cron",
        "invalid cron expression: '0 18 * fri' has 4 fields",
    ),
    (
        'cron: "0 18 * * fri"',
        'cron: "0 25 * * fri"',
        "change_control.gates[0].freeze_windows[0].cron",
        "hour: 25 is out of range",
    ),
    (
        "time_zone: Europe/Berlin",
        "time_zone: Europe/Berln",
        "change_control.gates[0].freeze_windows[0].time_zone",
        "did you mean 'Europe/Berlin'",
    ),
    (
        "duration: 63h",
        "duration: 400d",
        "change_control.gates[0].freeze_windows[0].duration",
        "longer than a year",
    ),
    (
        "services: [checkout]\n",
        "services: [chekout]\n",
        "change_control.gates[0].services[0]",
        "unknown service 'chekout' (did you mean 'checkout'?)",
    ),
    ("on: [triggered]", "on: [opened]", "automation.rules[0].on[0]", "invalid trigger 'opened'"),
    (
        "command: note, text: hi",
        "command: note",
        "automation.rules[0].action.incident",
        "a note needs text",
    ),
    (
        "services: [checkout]}",
        "services: [nope]}",
        "status_page.components[0].services[0]",
        "unknown service 'nope'",
    ),
    (
        "    - {id: shop, name: Shop, services: [checkout]}\n",
        "    - {id: shop, name: Shop, services: [checkout]}\n"
        "    - {id: shop, name: Again, services: [payments]}\n",
        "status_page.components[1].id",
        "duplicate component id 'shop'",
    ),
    (
        "    - id: note\n",
        "    - id: note\n      matchers: ['a=~\"(\"']\n",
        "automation.rules[0].matchers[0].value",
        "invalid regular expression",
    ),
    (
        "freeze_windows:\n",
        "open_incidents: {fail_at: {}}\n      freeze_windows:\n",
        "change_control.gates[0].open_incidents.fail_at",
        "set at least one",
    ),
    (
        "freeze_windows:\n",
        "on_call: {nobody_on_call: panic}\n      freeze_windows:\n",
        "change_control.gates[0].on_call.nobody_on_call",
        "'fail', 'warn' or 'off'",
    ),
    (
        "change_control:\n",
        'change_control:\n  sleep_hours: {start: "07:00", end: "07:00"}\n',
        "change_control.sleep_hours",
        "start, end: equal",
    ),
    (
        "change_control:\n",
        "change_control:\n  override_ttl: 2h\n  decision_retention: 90m\n",
        "change_control.decision_retention",
        "1h30m is shorter than decision_ttl or override_ttl (2h)",
    ),
    (
        "- {name: weekend",
        "- {name: w, cron: '@daily', duration: 1h}\n        - {name: w",
        "change_control.gates[0].freeze_windows[1].name",
        "'w' is listed more than once",
    ),
]


@pytest.mark.parametrize(("old", "new", "path", "fragment"), CASES)
def test_mistakes_are_reported_at_the_field(old: str, new: str, path: str, fragment: str) -> None:
    text = BASE + SECTIONS
    assert old in text, old
    issues = issues_of(text.replace(old, new, 1))
    found = [i for i in issues if i.path == path]
    assert found, "\n".join(map(str, issues))
    assert fragment in found[0].message
    assert found[0].line is not None


def test_a_signed_action_needs_the_webhook_secret() -> None:
    text = BASE + textwrap.dedent(
        """\
        notification:
          webhook: {signing_secret_env: ""}
        automation:
          rules:
            - id: hook
              on: [resolved]
              action: {type: http, url: "https://runner.example.com/run"}
            - id: plain
              on: [resolved]
              action: {type: http, url: "https://runner.example.com/run", signed: false}
        """
    )
    issues = issues_of(text)
    assert [i.path for i in issues] == ["automation.rules[0].action.signed"]
    assert "would send its request unsigned" in issues[0].message
