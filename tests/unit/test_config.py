"""Unit tests of the configuration model, loader, durations and reload (no network)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import textwrap
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from tocsin_common.config import (
    ConfigError,
    ConfigIssue,
    ConfigStore,
    DurationError,
    TocsinConfig,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "tocsin.example.yaml"
DOCS = ROOT / "docs" / "configuration.md"

# A small valid configuration; tests break one thing at a time. Line numbers matter below.
BASE = textwrap.dedent(
    """\
    version: 1
    services:
      - id: checkout
        name: Checkout
        escalation_policy: pol
        depends_on: [payments]
        integrations:
          - {key: checkout000000000000000000000001, type: events_v2}
      - id: payments
        name: Payments
        escalation_policy: pol
        integrations:
          - {key: payments000000000000000000000001}
    teams:
      - {id: sre, name: SRE, members: [alice]}
    users:
      - id: alice
        name: Alice
        email: alice@example.com
        contact_methods:
          - {id: alice-hook, type: webhook, address: "http://127.0.0.1:9999/pages/alice"}
        notification_rules:
          high: [{delay: 0m, contact_method: alice-hook}]
    schedules:
      - id: primary
        name: Primary
        time_zone: Europe/Berlin
        layers:
          - {start: 2026-01-05T09:00:00, rotation: weekly, users: [alice]}
    escalation_policies:
      - id: pol
        name: Policy
        levels:
          - delay: 5m
            targets: [{type: schedule, id: primary}, {type: user, id: alice}]
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


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the occurrence-th line containing needle."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# --- the example and the docs ---------------------------------------------------------------


def test_example_file_loads_and_uses_every_feature() -> None:
    config = load_config(EXAMPLE)
    assert {s.id for s in config.services} == {"checkout", "payments", "search"}
    assert config.service("checkout").depends_on == ("payments",)
    assert config.heartbeats and config.teams and config.schedules
    assert {u.id for u in config.users} == {"alice", "bob", "carol"}
    assert any(s.inhibit_rules for s in config.services)
    assert any(s.maintenance_windows for s in config.services)
    assert {s.grouping.mode for s in config.services} == {"none", "content", "time"}
    primary = config.schedule("primary")
    assert len(primary.layers) == 2 and primary.overrides
    assert any(layer.restrictions for layer in primary.layers)
    assert any(layer.on_call_at_once > 1 for s in config.schedules for layer in s.layers)
    policy = config.policy("checkout-primary")
    assert len(policy.levels) == 2 and policy.repeat == 1
    hooks = [m for u in config.users for m in u.contact_methods if m.type == "webhook"]
    assert all(m.address.startswith("http://127.0.0.1:9999/pages/") for m in hooks)
    for service in config.services:
        for integration in service.integrations:
            assert len(integration.key) == 32


def test_docs_yaml_block_is_the_example_file() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```$", docs, flags=re.S | re.M)
    assert len(blocks) == 1, "docs/configuration.md must hold exactly one ```yaml block"
    assert blocks[0] == EXAMPLE.read_text(encoding="utf-8")


def test_docs_mention_every_field() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    from pydantic import BaseModel

    def fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
        names: set[str] = set()
        if model in seen:
            return names
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            for sub in _models_in(info.annotation):
                names |= fields(sub, seen)
        return names

    missing = sorted(n for n in fields(TocsinConfig, set()) if f"`{n}`" not in docs)
    assert not missing, f"fields not documented: {missing}"


def _models_in(annotation: object) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    found: list[type] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


# --- lookups ---------------------------------------------------------------------------------


def test_index_helpers() -> None:
    config = parse_config(BASE, "tocsin.yaml")
    found = config.service_for_key("payments000000000000000000000001")
    assert found is not None
    service, integration = found
    assert service.id == "payments" and integration.type == "any"
    assert config.service_for_key("nope") is None
    assert config.service("checkout").name == "Checkout"
    assert config.user("alice").time_zone == "UTC"
    assert config.team("sre").members == ("alice",)
    assert config.schedule("primary").zone.key == "Europe/Berlin"
    assert config.policy("pol").levels[0].delay == timedelta(minutes=5)
    assert config.contact_method("alice", "alice-hook").type == "webhook"
    assert config.upstream("checkout") == ("payments",)
    with pytest.raises(KeyError, match="unknown service 'x'"):
        config.service("x")
    with pytest.raises(KeyError):
        config.contact_method("alice", "nope")


def test_defaults() -> None:
    config = parse_config(BASE, "tocsin.yaml")
    service = config.service("checkout")
    assert service.integrations[0].rate_limit_per_minute == 1200
    assert service.ack_timeout is None and service.auto_resolve_timeout is None
    assert service.change_lookback == timedelta(hours=1)
    assert service.grouping.mode == "none"
    assert service.urgency.for_severity("warning") == "low"
    assert service.urgency.for_severity(None) == "high"
    assert config.notification.email.from_ == "tocsin@localhost"
    assert config.notification.links.ttl == timedelta(hours=24)
    assert config.policy("pol").repeat == 0


def test_config_is_frozen() -> None:
    config = parse_config(BASE, "tocsin.yaml")
    with pytest.raises(ValueError):
        config.service("checkout").name = "x"  # type: ignore[misc]


def test_matcher_semantics() -> None:
    text = BASE.replace(
        "    depends_on: [payments]\n",
        "    depends_on: [payments]\n"
        "    inhibit_rules:\n"
        "      - source_matchers: ['severity=\"critical\"']\n"
        "        target_matchers: ['severity=~\"warning|info\"', 'team!~\"db.*\"']\n"
        "        equal: [alertname]\n",
    )
    rule = parse_config(text, "t.yaml").service("checkout").inhibit_rules[0]
    assert rule.source_matchers[0].matches({"severity": "critical"})
    warning, team = rule.target_matchers
    assert warning.matches({"severity": "info"}) and not warning.matches({"severity": "infos"})
    assert team.matches({}) and not team.matches({"team": "dba"})
    assert str(warning) == 'severity=~"warning|info"'


# --- structural errors -----------------------------------------------------------------------


def test_unknown_field_is_rejected_with_suggestion() -> None:
    text = BASE.replace(
        "    escalation_policy: pol\n    depends_on", "    escalaton_policy: pol\n    depends_on"
    )
    issues = issues_of(text)
    issue = issue_at(issues, "services[0].escalaton_policy")
    assert "unknown field" in issue.message and "escalation_policy" in issue.message
    assert issue.line == line_of(text, "escalaton_policy")
    assert issue_at(issues, "services[0].escalation_policy").message == "required field is missing"


def test_secret_in_file_points_to_env_field() -> None:
    text = BASE + "notification:\n  email: {password: hunter2}\n"
    issue = issue_at(issues_of(text), "notification.email.password")
    assert "password_env" in issue.message


def test_several_structural_issues_at_once_with_lines() -> None:
    text = (
        BASE.replace("delay: 5m", "delay: 0s")
        .replace("time_zone: Europe/Berlin", "time_zone: Europe/Berln")
        .replace('address: "http://127.0.0.1:9999/pages/alice"', "address: not-a-url")
        .replace("{key: payments000000000000000000000001}", "{key: 'bad key!'}")
    )
    issues = issues_of(text)
    expected = {
        "escalation_policies[0].levels[0].delay": "delay: 0s",
        "schedules[0].time_zone": "Europe/Berln",
        "users[0].contact_methods[0].address": "not-a-url",
        "services[1].integrations[0].key": "bad key!",
    }
    for path, needle in expected.items():
        assert issue_at(issues, path).line == line_of(text, needle)
    assert "did you mean 'Europe/Berlin'" in issue_at(issues, "schedules[0].time_zone").message
    # Listed in file order, one per line, in the documented format.
    rendered = str(ConfigError(issues)).splitlines()
    assert len(rendered) == len(issues)
    assert rendered == [str(i) for i in sorted(issues, key=lambda i: i.line or 0)]
    assert rendered[0].startswith(f"tocsin.yaml:{issues[0].line}: ")


def test_contact_address_checked_per_type() -> None:
    text = BASE.replace(
        '{id: alice-hook, type: webhook, address: "http://127.0.0.1:9999/pages/alice"}',
        '{id: alice-hook, type: webhook, address: "http://127.0.0.1:9999/pages/alice"}\n'
        "      - {id: a-sms, type: sms, address: '5550100'}\n"
        "      - {id: a-mail, type: email, address: alice.example.com}\n"
        "      - {id: a-voice, type: voice, address: +15555550100}\n"
        "      - {id: a-slack, type: slack, address: 'ftp://x'}",
    )
    issues = issues_of(text)
    assert {i.path for i in issues} == {
        "users[0].contact_methods[1].address",
        "users[0].contact_methods[2].address",
        "users[0].contact_methods[4].address",
    }


def test_a_contact_method_may_name_an_installed_providers_channel() -> None:
    """Providers are plugins (entry points), so the type is not a closed list; a malformed
    one is refused with the field named, and only built-in types have address rules."""
    text = BASE.replace(
        '{id: alice-hook, type: webhook, address: "http://127.0.0.1:9999/pages/alice"}',
        '{id: alice-hook, type: webhook, address: "http://127.0.0.1:9999/pages/alice"}\n'
        "      - {id: a-pigeon, type: pigeon, address: loft-7}\n"
        "      - {id: a-bad, type: 'Pigeon Post', address: loft-7}",
    )
    issues = issues_of(text)
    assert [i.path for i in issues] == ["users[0].contact_methods[2].type"]
    assert "invalid contact method type 'Pigeon Post'" in issues[0].message
    assert "email, sms, voice, slack, teams, webhook" in issues[0].message
    config = parse_config(
        text.replace("      - {id: a-bad, type: 'Pigeon Post', address: loft-7}\n", ""), "t.yaml"
    )
    pigeon = config.contact_method("alice", "a-pigeon")
    assert (pigeon.type, pigeon.address) == ("pigeon", "loft-7")


def test_layer_and_restriction_rules() -> None:
    bad_layers = textwrap.indent(
        textwrap.dedent(
            """\
            - start: 2026-01-05T09:00:00+01:00
              rotation: custom
              users: [alice]
              on_call_at_once: 2
            - start: 2026-01-05T09:00:00
              rotation: daily
              turn_length: 1d
              users: [alice]
              restrictions:
                - {type: daily, start: 09:00, end: 17:00}
                - {type: weekly, start: '09:00', end: '17:00', start_day: Monday}
                - {type: daily, start: '25:00', end: '17:00'}
            """
        ),
        "      ",
    )
    text = BASE.replace(
        "      - {start: 2026-01-05T09:00:00, rotation: weekly, users: [alice]}\n", bad_layers
    )
    issues = issues_of(text)
    for path, needle in (
        ("schedules[0].layers[0].start", "+01:00"),
        ("schedules[0].layers[0].turn_length", "+01:00"),  # missing: reported at the item
        ("schedules[0].layers[0].on_call_at_once", "on_call_at_once: 2"),
        ("schedules[0].layers[1].turn_length", "turn_length: 1d"),
        ("schedules[0].layers[1].restrictions[1].end_day", "Monday"),
        ("schedules[0].layers[1].restrictions[2].start", "25:00"),
    ):
        assert issue_at(issues, path).line == line_of(text, needle), path
    # Unquoted 09:00 / 17:00 are times of day, not YAML 1.1 base-60 numbers.
    assert not any(i.path.startswith("schedules[0].layers[1].restrictions[0]") for i in issues)
    message = issue_at(issues, "schedules[0].layers[0].on_call_at_once").message
    assert "on_call_at_once is 2" in message


def test_bad_matchers_and_grouping() -> None:
    text = BASE.replace(
        "    depends_on: [payments]\n",
        "    depends_on: [payments]\n"
        "    grouping: {mode: content, fields: [labels.alertname, nonsense]}\n"
        "    inhibit_rules:\n"
        "      - source_matchers: ['severity=~\"((\"']\n"
        "        target_matchers: ['no operator here']\n",
    )
    issues = issues_of(text)
    assert "fields[1]" in issue_at(issues, "services[0].grouping.fields[1]").path
    assert (
        "regular expression"
        in issue_at(issues, "services[0].inhibit_rules[0].source_matchers[0].value").message
    )
    assert (
        "invalid matcher"
        in issue_at(issues, "services[0].inhibit_rules[0].target_matchers[0]").message
    )


def test_empty_levels_and_bad_maintenance_window() -> None:
    text = BASE.replace(
        "    levels:\n      - delay: 5m\n"
        "        targets: [{type: schedule, id: primary}, {type: user, id: alice}]\n",
        "    levels: []\n",
    ).replace(
        "    depends_on: [payments]\n",
        "    depends_on: [payments]\n"
        "    maintenance_windows:\n"
        "      - {start: 2026-12-01T04:00:00Z, end: 2026-12-01T02:00:00Z}\n"
        "      - {start: 2026-12-01T02:00:00, end: 2026-12-01T04:00:00Z}\n",
    )
    issues = issues_of(text)
    assert issue_at(issues, "escalation_policies[0].levels").line == line_of(text, "levels: []")
    assert issue_at(issues, "services[0].maintenance_windows[0].end").message == (
        "end must be after start"
    )
    assert "UTC offset" in issue_at(issues, "services[0].maintenance_windows[1].start").message


def test_duplicate_yaml_key() -> None:
    text = BASE.replace("    name: Payments\n", "    name: Payments\n    name: Payments again\n")
    issue = issue_at(issues_of(text), "services[1].name")
    assert "duplicate key" in issue.message and issue.line == line_of(text, "Payments again")


# --- cross-reference errors ------------------------------------------------------------------

CROSS_REF_CASES = [
    # (what to replace, replacement, expected path, message fragment, line needle)
    (
        "escalation_policy: pol\n    depends_on",
        "escalation_policy: x\n    depends_on",
        "services[0].escalation_policy",
        "unknown escalation policy 'x'",
        "escalation_policy: x",
    ),
    (
        "depends_on: [payments]",
        "depends_on: [paymnts]",
        "services[0].depends_on[0]",
        "unknown service 'paymnts' (did you mean 'payments'?)",
        "paymnts",
    ),
    (
        "{key: payments000000000000000000000001}",
        "{key: checkout000000000000000000000001}",
        "services[1].integrations[0].key",
        "already used by services[0].integrations[0]",
        "- {key: checkout000000000000000000000001}",
    ),
    (
        "  - id: payments\n",
        "  - id: checkout\n",
        "services[1].id",
        "duplicate service id 'checkout'",
        "name: Payments",
    ),
    (
        "members: [alice]",
        "members: [alice, bob]",
        "teams[0].members[1]",
        "unknown user 'bob'",
        "members: [alice, bob]",
    ),
    (
        "contact_method: alice-hook}]",
        "contact_method: bob-hook}]",
        "users[0].notification_rules.high[0].contact_method",
        "unknown contact method 'bob-hook' for user 'alice'",
        "bob-hook",
    ),
    (
        "users: [alice]}",
        "users: [alice, zed]}",
        "schedules[0].layers[0].users[1]",
        "unknown user 'zed'",
        "zed",
    ),
    (
        "{type: schedule, id: primary}",
        "{type: schedule, id: secondary}",
        "escalation_policies[0].levels[0].targets[0].id",
        "unknown schedule 'secondary'",
        "secondary",
    ),
    (
        "{type: user, id: alice}",
        "{type: team, id: alice}",
        "escalation_policies[0].levels[0].targets[1].id",
        "unknown team 'alice'",
        "{type: team, id: alice}",
    ),
]


@pytest.mark.parametrize(("old", "new", "path", "fragment", "needle"), CROSS_REF_CASES)
def test_cross_reference_errors(old: str, new: str, path: str, fragment: str, needle: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    issue = issue_at(issues_of(text), path)
    assert fragment in issue.message
    # The duplicate id is reported on the list item's first line, the one above its name.
    expected = line_of(text, needle) - (1 if needle == "name: Payments" else 0)
    assert issue.line == expected


def test_str_matches_documented_format() -> None:
    text = BASE.replace(
        "escalation_policy: pol\n    depends_on", "escalation_policy: x\n    depends_on"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "tocsin.yaml")
    assert str(caught.value) == (
        "tocsin.yaml:5: services[0].escalation_policy: unknown escalation policy 'x'"
    )
    assert isinstance(caught.value, ValueError)


def test_dependency_cycle_is_reported_once_with_its_path() -> None:
    text = BASE.replace("    name: Payments\n", "    name: Payments\n    depends_on: [checkout]\n")
    issues = [i for i in issues_of(text) if "cycle" in i.message]
    assert len(issues) == 1
    assert issues[0].message == "dependency cycle: checkout -> payments -> checkout"
    assert issues[0].path == "services[1].depends_on[0]"
    assert issues[0].line == line_of(text, "depends_on: [checkout]")


def test_self_dependency() -> None:
    text = BASE.replace("depends_on: [payments]", "depends_on: [checkout]")
    assert (
        "cannot depend on itself" in issue_at(issues_of(text), "services[0].depends_on[0]").message
    )


def test_overlapping_overrides_for_one_user() -> None:
    overrides = textwrap.indent(
        textwrap.dedent(
            """\
            overrides:
              - {user: alice, start: 2026-12-24T00:00:00+01:00, end: 2026-12-27T00:00:00+01:00}
              - {user: alice, start: 2026-12-27T00:00:00+01:00, end: 2026-12-28T00:00:00+01:00}
              - {user: alice, start: 2026-12-25T00:00:00Z, end: 2026-12-25T06:00:00Z}
            """
        ),
        "    ",
    )
    text = BASE.replace("users: [alice]}\n", "users: [alice]}\n" + overrides)
    issues = issues_of(text)
    # Back to back (the second one) is fine; the third lies inside the first.
    assert [i.path for i in issues] == ["schedules[0].overrides[2]"]
    assert "overlaps schedules[0].overrides[0]" in issues[0].message
    assert issues[0].line == line_of(text, "2026-12-25T00:00:00Z")


def test_many_cross_reference_issues_at_once() -> None:
    text = (
        BASE.replace(
            "escalation_policy: pol\n    depends_on", "escalation_policy: x\n    depends_on"
        )
        .replace("members: [alice]", "members: [bob]")
        .replace("{type: schedule, id: primary}", "{type: schedule, id: nope}")
        .replace("contact_method: alice-hook}]", "contact_method: alice-sms}]")
    )
    issues = issues_of(text)
    assert [i.path for i in issues] == [
        "services[0].escalation_policy",
        "teams[0].members[0]",
        "users[0].notification_rules.high[0].contact_method",
        "escalation_policies[0].levels[0].targets[0].id",
    ]
    assert all(i.line is not None and i.file == "tocsin.yaml" for i in issues)


# --- whole-file problems ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.issues[0].file == str(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("", "the file is empty", None),
        ("# only a comment\n", "the file is empty", None),
        ("- a\n- b\n", "top level must be a mapping", 1),
        ("version: 1\nservices: [\n", "invalid YAML", 3),
        ("version: 1\n  bad: indent\n", "invalid YAML", 2),
        ("version: 2\n", "unsupported version 2", 1),
        ("services: []\n", "version: required field is missing", 1),
    ],
)
def test_whole_file_problems(text: str, fragment: str, line: int | None) -> None:
    issues = issues_of(text)
    assert len(issues) == 1
    assert fragment in str(issues[0]) and issues[0].line == line


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 0m ", timedelta(0)),
        (45, timedelta(seconds=45)),
        ("120", timedelta(seconds=120)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse_duration(raw: object, expected: timedelta) -> None:
    assert parse_duration(raw) == expected


@pytest.mark.parametrize(
    "raw", ["-5m", -1, "abc", "", "5mm", "30m1h", "1.5h", "1 h", "5x", True, 1.5, None]
)
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(raw)


def test_negative_duration_message() -> None:
    with pytest.raises(DurationError, match="negative"):
        parse_duration("-5m")


def test_format_duration() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(days=8, seconds=1)) == "1w1d1s"
    for text in ("1h30m", "2d", "1w", "45s"):
        assert format_duration(parse_duration(text)) == text


def test_duration_fields_in_file() -> None:
    text = BASE.replace("delay: 5m", "delay: 1h30m").replace(
        "    depends_on: [payments]\n", "    depends_on: [payments]\n    ack_timeout: 90\n"
    )
    config = parse_config(text, "t.yaml")
    assert config.policy("pol").levels[0].delay == timedelta(minutes=90)
    assert config.service("checkout").ack_timeout == timedelta(seconds=90)
    bad = issue_at(
        issues_of(BASE.replace("delay: 5m", "delay: soon")),
        "escalation_policies[0].levels[0].delay",
    )
    assert "invalid duration 'soon'" in bad.message


def test_aware_datetimes_parsed() -> None:
    config = load_config(EXAMPLE)
    window = config.service("search").maintenance_windows[0]
    assert window.start.tzinfo is not None
    assert window.active_at(datetime(2027, 3, 14, 2, 0, tzinfo=UTC))
    restriction = config.schedule("primary").layers[1].restrictions[0]
    assert (restriction.start, restriction.end) == (time(9, 0), time(17, 0))


# --- reload ----------------------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_reload_swaps_on_good_and_keeps_last_good_on_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tocsin.yaml"
    write(path, BASE)
    store = ConfigStore(path)
    seen: list[TocsinConfig] = []
    store.subscribe(seen.append)
    first = store.current

    write(
        path,
        BASE.replace(
            "escalation_policy: pol\n    depends_on", "escalation_policy: x\n    depends_on"
        ),
    )
    with caplog.at_level(logging.ERROR, logger="tocsin.config"):
        assert store.reload() is False
    assert store.current is first
    assert seen == []
    assert "unknown escalation policy 'x'" in caplog.text
    assert f"{path}:5: services[0].escalation_policy" in caplog.text

    path.unlink()
    assert store.reload() is False
    assert store.current is first

    write(path, BASE.replace("name: Checkout\n", "name: Checkout v2\n"))
    assert store.reload() is True
    assert store.current.service("checkout").name == "Checkout v2"
    assert seen == [store.current]


def test_reload_survives_a_failing_subscriber(tmp_path: Path) -> None:
    path = tmp_path / "tocsin.yaml"
    write(path, BASE)
    store = ConfigStore(path)
    calls: list[str] = []

    def broken(_: TocsinConfig) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    unsubscribe = store.subscribe(lambda c: calls.append(c.service("checkout").name))
    assert store.reload() is True
    assert calls == ["Checkout"]
    unsubscribe()
    assert store.reload() is True
    assert calls == ["Checkout"]


def test_store_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tocsin.yaml"
    write(path, "version: 1\nusers: [{id: Alice}]\n")
    with pytest.raises(ConfigError):
        ConfigStore(path)


async def test_watch_reloads_on_content_change(tmp_path: Path) -> None:
    path = tmp_path / "tocsin.yaml"
    write(path, BASE)
    store = ConfigStore(path)
    changed = asyncio.Event()
    store.subscribe(lambda _: changed.set())
    task = asyncio.create_task(store.watch(0.01))
    try:
        await asyncio.sleep(0.05)
        assert not changed.is_set()  # nothing changed, nothing reloaded
        bad = BASE.replace("members: [alice]", "members: [nobody]")
        write(path, bad)
        await asyncio.sleep(0.05)
        assert not changed.is_set() and store.current.team("sre").members == ("alice",)
        write(path, BASE.replace("name: SRE", "name: Site Reliability"))
        await asyncio.wait_for(changed.wait(), timeout=5)
        assert store.current.team("sre").name == "Site Reliability"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_sighup_reloads(tmp_path: Path) -> None:
    path = tmp_path / "tocsin.yaml"
    write(path, BASE)
    store = ConfigStore(path)
    changed = asyncio.Event()
    store.subscribe(lambda _: changed.set())
    loop = asyncio.get_running_loop()
    store.install_sighup()
    try:
        write(path, BASE.replace("name: SRE", "name: Site Reliability"))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(changed.wait(), timeout=5)
        assert store.current.team("sre").name == "Site Reliability"
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def test_an_incidents_alert_bound_is_checked() -> None:
    text = BASE.replace(
        "    depends_on: [payments]\n",
        "    depends_on: [payments]\n    grouping: {mode: time, max_alerts: 0}\n",
    )
    issue = issue_at(issues_of(text), "services[0].grouping.max_alerts")
    assert "greater than or equal to 1" in issue.message
