"""Unit tests of on-call resolution (rotations, layers, overrides) and escalation plans."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_escalation.oncall import (
    layer_users,
    resolve_targets,
    turn_index,
    who_is_on_call,
)
from tocsin_escalation.policy import PlannedPage, plan_level, plan_users

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

CONFIG_TEXT = textwrap.dedent(
    """\
    version: 1
    teams:
      - {id: sre, name: SRE, members: [b, a]}
    users:
      - id: a
        name: A
        email: a@example.com
        contact_methods:
          - {id: a-hook, type: webhook, address: "http://127.0.0.1:9999/pages/a"}
          - {id: a-mail, type: email, address: a@example.com}
        notification_rules:
          high: [{delay: 0m, contact_method: a-hook}, {delay: 5m, contact_method: a-mail}]
          low: [{delay: 0m, contact_method: a-mail}]
      - id: b
        name: B
        email: b@example.com
        contact_methods:
          - {id: b-hook, type: webhook, address: "http://127.0.0.1:9999/pages/b"}
        notification_rules:
          high: [{delay: 1m, contact_method: b-hook}]
      - id: c
        name: C
        email: c@example.com
        contact_methods:
          - {id: c-mail, type: email, address: c@example.com}
        notification_rules:
          low: [{contact_method: c-mail}]
    schedules:
      - id: weekly
        name: Weekly in Berlin
        time_zone: Europe/Berlin
        layers:
          - {start: 2026-03-23T09:00:00, rotation: weekly, users: [a, b]}
      - id: daily
        name: Daily in Berlin
        time_zone: Europe/Berlin
        layers:
          - {start: 2026-01-05T09:00:00, rotation: daily, users: [a, b, c]}
      - id: daily-autumn
        name: Daily across the end of DST
        time_zone: Europe/Berlin
        layers:
          - {start: 2026-10-24T09:00:00, rotation: daily, users: [a, b]}
      - id: hourly
        name: Hourly in Berlin
        time_zone: Europe/Berlin
        layers:
          - {start: 2026-03-29T00:00:00, rotation: hourly, users: [a, b]}
      - id: custom
        name: Twelve hours in New York
        time_zone: America/New_York
        layers:
          - {start: 2026-01-05T08:00:00, rotation: custom, turn_length: 12h, users: [a, b, c]}
      - id: pair
        name: Two at once
        time_zone: UTC
        layers:
          - {start: 2026-01-05T00:00:00, rotation: weekly, users: [a, b, c], on_call_at_once: 2}
      - id: layered
        name: Layers and an override
        time_zone: UTC
        layers:
          - {start: 2026-01-05T00:00:00, rotation: weekly, users: [a]}
          - {start: 2026-02-02T00:00:00, rotation: daily, users: [b, c]}
        overrides:
          - {user: a, start: 2026-02-10T12:00:00Z, end: 2026-02-10T18:00:00Z}
    escalation_policies:
      - id: pol
        name: Policy
        levels:
          - delay: 5m
            targets:
              - {type: user, id: a}
              - {type: schedule, id: pair}
              - {type: team, id: sre}
          - delay: 10m
            targets: [{type: user, id: c}]
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG_TEXT, "tocsin.yaml")


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[misc]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def on_call(config: TocsinConfig, schedule: str, at: datetime) -> list[str]:
    return who_is_on_call(config.schedule(schedule), at)


# --- rotations ---------------------------------------------------------------------------------


def test_weekly_rotation_takes_turns(config: TocsinConfig) -> None:
    assert on_call(config, "weekly", berlin(2026, 3, 23, 9, 0)) == ["a"]
    assert on_call(config, "weekly", berlin(2026, 3, 27, 18, 0)) == ["a"]
    assert on_call(config, "weekly", berlin(2026, 4, 1, 12, 0)) == ["b"]
    assert on_call(config, "weekly", berlin(2026, 4, 6, 9, 0)) == ["a"]
    assert on_call(config, "weekly", berlin(2026, 4, 13, 9, 0)) == ["b"]


@pytest.mark.parametrize("as_utc", [False, True], ids=["local", "utc"])
def test_weekly_handoff_keeps_wall_clock_across_dst(config: TocsinConfig, as_utc: bool) -> None:
    # DST began in Berlin on 2026-03-29: the first week is one hour short in elapsed time,
    # but the handoff still happens at 09:00 local (07:00 UTC), not 10:00 local.
    before = berlin(2026, 3, 30, 8, 30)
    after = berlin(2026, 3, 30, 9, 30)
    if as_utc:
        before, after = before.astimezone(UTC), after.astimezone(UTC)
        assert after == utc(2026, 3, 30, 7, 30)
    assert on_call(config, "weekly", before) == ["a"]
    assert on_call(config, "weekly", after) == ["b"]
    assert on_call(config, "weekly", berlin(2026, 3, 30, 9, 0)) == ["b"]
    assert on_call(config, "weekly", berlin(2026, 3, 30, 8, 59)) == ["a"]


def test_daily_rotation(config: TocsinConfig) -> None:
    assert on_call(config, "daily", berlin(2026, 1, 5, 9, 0)) == ["a"]
    assert on_call(config, "daily", berlin(2026, 1, 6, 8, 59)) == ["a"]
    assert on_call(config, "daily", berlin(2026, 1, 6, 9, 0)) == ["b"]
    assert on_call(config, "daily", berlin(2026, 1, 7, 23, 0)) == ["c"]
    assert on_call(config, "daily", berlin(2026, 1, 8, 9, 0)) == ["a"]
    assert on_call(config, "daily", utc(2026, 1, 8, 8, 0)) == ["a"]  # 09:00 CET


def test_daily_handoff_keeps_wall_clock_when_dst_ends(config: TocsinConfig) -> None:
    # DST ended in Berlin on 2026-10-25 (a 25-hour day); handoff stays at 09:00 local.
    assert on_call(config, "daily-autumn", berlin(2026, 10, 25, 8, 59)) == ["a"]
    assert on_call(config, "daily-autumn", berlin(2026, 10, 25, 9, 0)) == ["b"]
    assert on_call(config, "daily-autumn", utc(2026, 10, 26, 7, 59)) == ["b"]  # 08:59 CET
    assert on_call(config, "daily-autumn", utc(2026, 10, 26, 8, 0)) == ["a"]  # 09:00 CET


def test_hourly_rotation_counts_elapsed_hours(config: TocsinConfig) -> None:
    # Starts 2026-03-29 00:00 CET (23:00 UTC the day before); 02:00-03:00 local never happens.
    assert on_call(config, "hourly", utc(2026, 3, 28, 23, 0)) == ["a"]
    assert on_call(config, "hourly", utc(2026, 3, 28, 23, 59)) == ["a"]
    assert on_call(config, "hourly", utc(2026, 3, 29, 0, 0)) == ["b"]
    # 04:30 CEST = 02:30 UTC: 3.5 hours elapsed, turn 3.
    assert on_call(config, "hourly", utc(2026, 3, 29, 2, 30)) == ["b"]
    assert on_call(config, "hourly", utc(2026, 3, 29, 3, 0)) == ["a"]


def test_hourly_rotation_same_answer_in_any_time_zone(config: TocsinConfig) -> None:
    local = berlin(2026, 3, 29, 4, 30)  # 3.5 hours after 00:00 CET
    schedule = config.schedule("hourly")
    layer = schedule.layers[0]
    assert turn_index(layer, schedule, local.astimezone(UTC)) == 3
    assert turn_index(layer, schedule, local) == 3
    assert on_call(config, "hourly", local) == ["b"]


def test_custom_turn_length(config: TocsinConfig) -> None:
    start = datetime(2026, 1, 5, 8, 0, tzinfo=NEW_YORK).astimezone(UTC)
    assert on_call(config, "custom", start) == ["a"]
    assert on_call(config, "custom", start + timedelta(hours=11, minutes=59)) == ["a"]
    assert on_call(config, "custom", start + timedelta(hours=12)) == ["b"]
    assert on_call(config, "custom", start + timedelta(hours=24)) == ["c"]
    assert on_call(config, "custom", start + timedelta(hours=36)) == ["a"]
    assert on_call(config, "custom", start - timedelta(seconds=1)) == []


def test_several_on_call_at_once(config: TocsinConfig) -> None:
    assert on_call(config, "pair", utc(2026, 1, 5, 0, 0)) == ["a", "b"]
    assert on_call(config, "pair", utc(2026, 1, 12, 0, 0)) == ["b", "c"]
    assert on_call(config, "pair", utc(2026, 1, 19, 0, 0)) == ["c", "a"]
    assert on_call(config, "pair", utc(2026, 1, 26, 0, 0)) == ["a", "b"]


def test_before_layer_start_nobody(config: TocsinConfig) -> None:
    assert on_call(config, "weekly", berlin(2026, 3, 23, 8, 59)) == []
    assert on_call(config, "daily", utc(2025, 12, 31, 12, 0)) == []
    schedule = config.schedule("weekly")
    assert turn_index(schedule.layers[0], schedule, berlin(2026, 3, 23, 8, 59)) == -1
    assert layer_users(schedule.layers[0], schedule, berlin(2026, 3, 16, 9, 0)) == []


def test_later_layer_wins(config: TocsinConfig) -> None:
    # Only the first layer has started.
    assert on_call(config, "layered", utc(2026, 1, 20, 12, 0)) == ["a"]
    # From 2026-02-02 the second layer covers all the time and wins.
    assert on_call(config, "layered", utc(2026, 2, 2, 0, 0)) == ["b"]
    assert on_call(config, "layered", utc(2026, 2, 3, 0, 0)) == ["c"]


def test_override_wins_over_layers(config: TocsinConfig) -> None:
    # 2026-02-10 is day 8 of the daily layer [b, c]: b.
    assert on_call(config, "layered", utc(2026, 2, 10, 11, 59)) == ["b"]
    assert on_call(config, "layered", utc(2026, 2, 10, 12, 0)) == ["a"]
    assert on_call(config, "layered", berlin(2026, 2, 10, 18, 59)) == ["a"]  # 17:59 UTC
    assert on_call(config, "layered", utc(2026, 2, 10, 18, 0)) == ["b"]  # end is exclusive


# --- targets and plans -------------------------------------------------------------------------


def test_resolve_targets_user_schedule_team(config: TocsinConfig) -> None:
    at = utc(2026, 1, 12, 0, 0)  # pair schedule: [b, c]
    assert resolve_targets(config, [("user", "c")], at) == ["c"]
    assert resolve_targets(config, [("schedule", "pair")], at) == ["b", "c"]
    assert resolve_targets(config, [("team", "sre")], at) == ["b", "a"]
    assert resolve_targets(
        config, [("user", "a"), ("schedule", "pair"), ("team", "sre"), ("user", "c")], at
    ) == ["a", "b", "c"]
    assert resolve_targets(config, [], at) == []


def test_plan_level_one_page_per_user_and_rule(config: TocsinConfig) -> None:
    at = utc(2026, 1, 12, 0, 0)  # level 1: a, then pair [b, c], then sre [b, a]
    pages = plan_level(config, "pol", 1, 0, "high", at)
    assert pages == [
        PlannedPage("a", "a-hook", 0, timedelta(0), 1, 0),
        PlannedPage("a", "a-mail", 1, timedelta(minutes=5), 1, 0),
        PlannedPage("b", "b-hook", 0, timedelta(minutes=1), 1, 0),
        # c has no high-urgency rule: not notified at high urgency.
    ]
    keys = [p.idempotency_key("inc-1") for p in pages]
    assert keys == ["inc-1:1:0:a:0", "inc-1:1:0:a:1", "inc-1:1:0:b:0"]


def test_plan_level_low_urgency_second_level_and_loop(config: TocsinConfig) -> None:
    at = utc(2026, 1, 12, 0, 0)
    low = plan_level(config, "pol", 1, 0, "low", at)
    assert [(p.user_id, p.contact_method_id) for p in low] == [("a", "a-mail"), ("c", "c-mail")]
    second = plan_level(config, "pol", 2, 3, "low", at)
    assert second == [PlannedPage("c", "c-mail", 0, timedelta(0), 2, 3)]
    assert second[0].idempotency_key("inc-9") == "inc-9:2:3:c:0"
    with pytest.raises(KeyError):
        plan_level(config, "nope", 1, 0, "high", at)


def test_idempotency_keys_differ_by_every_part(config: TocsinConfig) -> None:
    base = PlannedPage("a", "a-hook", 0, timedelta(0), 1, 0)
    variants = [
        base,
        PlannedPage("b", "a-hook", 0, timedelta(0), 1, 0),
        PlannedPage("a", "a-hook", 1, timedelta(0), 1, 0),
        PlannedPage("a", "a-hook", 0, timedelta(0), 2, 0),
        PlannedPage("a", "a-hook", 0, timedelta(0), 1, 1),
    ]
    keys = {p.idempotency_key("inc") for p in variants} | {base.idempotency_key("other")}
    assert len(keys) == len(variants) + 1
    # The same decision replayed gives the same key.
    replay = plan_users(config, ["a"], 1, 0, "high")[0]
    assert replay.idempotency_key("inc") == base.idempotency_key("inc")
