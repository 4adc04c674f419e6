"""Unit tests of the schedule renderer: rotations across DST, restrictions, overrides, several
people at once, coverage gaps and the iCal export. Expectations are computed by hand."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_escalation.schedule import (
    OverrideSpan,
    RangeTooLong,
    Span,
    coverage_gaps,
    handoff,
    ical,
    overrides_in,
    render,
    render_layers,
    turn_index,
    who_is_on_call,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

USERS = "\n".join(
    f"  - {{id: {u}, name: {u.upper()}, email: {u}@example.com}}" for u in ("a", "b", "c", "d")
)

CONFIG = textwrap.dedent(
    """\
    version: 1
    users:
    {users}
    schedules:
      - id: berlin-weekly
        name: Berlin weekly
        time_zone: Europe/Berlin
        layers: [{{start: 2026-03-23T09:00:00, rotation: weekly, users: [a, b]}}]
      - id: berlin-daily-autumn
        name: Berlin daily autumn
        time_zone: Europe/Berlin
        layers: [{{start: 2026-10-24T09:00:00, rotation: daily, users: [a, b]}}]
      - id: ny-daily-spring
        name: New York daily spring
        time_zone: America/New_York
        layers: [{{start: 2026-03-07T09:00:00, rotation: daily, users: [a, b]}}]
      - id: ny-gap-handoff
        name: Handoff inside the spring-forward gap
        time_zone: America/New_York
        layers: [{{start: 2026-03-07T02:30:00, rotation: daily, users: [a, b]}}]
      - id: ny-weekly-autumn
        name: New York weekly autumn
        time_zone: America/New_York
        layers: [{{start: 2026-10-25T09:00:00, rotation: weekly, users: [a, b]}}]
      - id: ny-hourly-autumn
        name: New York hourly autumn
        time_zone: America/New_York
        layers: [{{start: 2026-11-01T00:00:00, rotation: hourly, users: [a, b]}}]
      - id: ny-repeated-handoff
        name: Handoff at a time that happens twice
        time_zone: America/New_York
        layers: [{{start: 2026-10-31T01:30:00, rotation: daily, users: [a, b]}}]
      - id: nights
        name: Nights only
        time_zone: UTC
        layers:
          - start: 2026-01-05T00:00:00
            rotation: daily
            users: [a]
            restrictions: [{{type: daily, start: "22:00", end: "06:00"}}]
      - id: weekends
        name: Weekdays and weekends
        time_zone: Europe/Berlin
        layers:
          - {{start: 2026-01-05T09:00:00, rotation: weekly, users: [a]}}
          - start: 2026-01-05T09:00:00
            rotation: weekly
            users: [b]
            restrictions:
              - {{type: weekly, start_day: friday, start: "17:00", end_day: monday, end: "09:00"}}
      - id: office-dst
        name: Office hours across DST
        time_zone: Europe/Berlin
        layers:
          - start: 2026-03-23T00:00:00
            rotation: daily
            users: [c]
            restrictions: [{{type: daily, start: "09:00", end: "17:00"}}]
      - id: pairs
        name: Two at once with an override
        time_zone: UTC
        layers:
          - {{start: 2026-01-05T00:00:00, rotation: custom, turn_length: 12h, users: [a, b, c],
             on_call_at_once: 2}}
        overrides:
          - {{user: d, start: 2026-01-05T06:00:00Z, end: 2026-01-05T08:00:00Z}}
    """
).format(users=USERS)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def spans(config: TocsinConfig, schedule: str, since: datetime, until: datetime) -> list[Span]:
    return render(config.schedule(schedule), since, until)


def S(start: datetime, end: datetime, *users: str) -> Span:
    return Span(start, end, tuple(users))


# --- DST: Europe/Berlin --------------------------------------------------------------------------


def test_berlin_weekly_handoff_stays_at_nine_when_dst_begins(config: TocsinConfig) -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST. 09:00 CET = 08:00Z; 09:00 CEST = 07:00Z.
    assert spans(config, "berlin-weekly", utc(2026, 3, 23, 8), utc(2026, 4, 6, 7)) == [
        S(utc(2026, 3, 23, 8), utc(2026, 3, 30, 7), "a"),  # a 167-hour week
        S(utc(2026, 3, 30, 7), utc(2026, 4, 6, 7), "b"),
    ]


def test_berlin_daily_handoff_stays_at_nine_when_dst_ends(config: TocsinConfig) -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: a's turn is 25 hours long.
    assert spans(config, "berlin-daily-autumn", utc(2026, 10, 24, 7), utc(2026, 10, 26, 8)) == [
        S(utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), "a"),
        S(utc(2026, 10, 25, 8), utc(2026, 10, 26, 8), "b"),
    ]


# --- DST: America/New_York -----------------------------------------------------------------------


def test_new_york_daily_handoff_stays_at_nine_when_dst_begins(config: TocsinConfig) -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT. 09:00 EST = 14:00Z; 09:00 EDT = 13:00Z.
    assert spans(config, "ny-daily-spring", utc(2026, 3, 7, 14), utc(2026, 3, 9, 13)) == [
        S(utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), "a"),  # a 23-hour day
        S(utc(2026, 3, 8, 13), utc(2026, 3, 9, 13), "b"),
    ]


def test_a_handoff_in_the_spring_forward_gap_uses_the_offset_before_it(
    config: TocsinConfig,
) -> None:
    schedule = config.schedule("ny-gap-handoff")
    layer = schedule.layers[0]
    # 02:30 on 2026-03-08 does not exist; read with EST (-5): 07:30Z, which is 03:30 EDT.
    assert handoff(layer, NEW_YORK, 1) == utc(2026, 3, 8, 7, 30)
    assert who_is_on_call(schedule, utc(2026, 3, 8, 7, 29)) == ["a"]
    assert who_is_on_call(schedule, utc(2026, 3, 8, 7, 30)) == ["b"]
    assert handoff(layer, NEW_YORK, 2) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT


def test_new_york_weekly_handoff_stays_at_nine_when_dst_ends(config: TocsinConfig) -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST. 09:00 EDT = 13:00Z; 09:00 EST = 14:00Z.
    assert spans(config, "ny-weekly-autumn", utc(2026, 10, 25, 13), utc(2026, 11, 8, 14)) == [
        S(utc(2026, 10, 25, 13), utc(2026, 11, 1, 14), "a"),  # a 169-hour week
        S(utc(2026, 11, 1, 14), utc(2026, 11, 8, 14), "b"),
    ]


def test_hourly_turns_count_elapsed_hours_through_the_repeated_hour(
    config: TocsinConfig,
) -> None:
    schedule = config.schedule("ny-hourly-autumn")  # 00:00 EDT = 04:00Z
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=0)  # 01:30 EDT = 05:30Z
    second = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)  # 01:30 EST = 06:30Z
    assert first.astimezone(UTC) == utc(2026, 11, 1, 5, 30)
    assert who_is_on_call(schedule, first) == ["b"]  # turn 1
    assert who_is_on_call(schedule, second) == ["a"]  # turn 2
    assert who_is_on_call(schedule, utc(2026, 11, 1, 7, 0)) == ["b"]  # 02:00 EST, turn 3


def test_a_handoff_at_a_repeated_time_happens_once(config: TocsinConfig) -> None:
    schedule = config.schedule("ny-repeated-handoff")
    layer = schedule.layers[0]
    # 01:30 on 2026-11-01 happens twice; the handoff is the first one (EDT): 05:30Z.
    assert handoff(layer, NEW_YORK, 1) == utc(2026, 11, 1, 5, 30)
    # An hour later the wall clock reads 01:10 again, but the turn does not go back.
    assert turn_index(layer, schedule, utc(2026, 11, 1, 6, 10)) == 1
    assert spans(config, "ny-repeated-handoff", utc(2026, 11, 1, 4), utc(2026, 11, 1, 8)) == [
        S(utc(2026, 11, 1, 4), utc(2026, 11, 1, 5, 30), "a"),
        S(utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8), "b"),
    ]


# --- restrictions and gaps -----------------------------------------------------------------------


def test_a_daily_restriction_past_midnight_leaves_gaps_by_day(config: TocsinConfig) -> None:
    rendered = spans(config, "nights", utc(2026, 1, 5, 0), utc(2026, 1, 6, 12))
    assert rendered == [
        S(utc(2026, 1, 5, 0), utc(2026, 1, 5, 6), "a"),
        S(utc(2026, 1, 5, 6), utc(2026, 1, 5, 22)),
        S(utc(2026, 1, 5, 22), utc(2026, 1, 6, 6), "a"),
        S(utc(2026, 1, 6, 6), utc(2026, 1, 6, 12)),
    ]
    assert coverage_gaps(rendered) == [rendered[1], rendered[3]]
    assert who_is_on_call(config.schedule("nights"), utc(2026, 1, 5, 12)) == []


def test_a_weekly_restriction_over_the_weekend_wins_over_the_earlier_layer(
    config: TocsinConfig,
) -> None:
    # 2026-01-09 is a Friday; Berlin is UTC+1 in January.
    assert spans(config, "weekends", utc(2026, 1, 9, 11), utc(2026, 1, 12, 11)) == [
        S(utc(2026, 1, 9, 11), utc(2026, 1, 9, 16), "a"),
        S(utc(2026, 1, 9, 16), utc(2026, 1, 12, 8), "b"),  # Fri 17:00 to Mon 09:00 local
        S(utc(2026, 1, 12, 8), utc(2026, 1, 12, 11), "a"),
    ]


def test_restrictions_follow_the_wall_clock_across_dst(config: TocsinConfig) -> None:
    rendered = spans(config, "office-dst", utc(2026, 3, 28, 0), utc(2026, 3, 30, 0))
    assert [s for s in rendered if not s.is_gap] == [
        S(utc(2026, 3, 28, 8), utc(2026, 3, 28, 16), "c"),  # 09-17 CET
        S(utc(2026, 3, 29, 7), utc(2026, 3, 29, 15), "c"),  # 09-17 CEST
    ]
    assert rendered[0] == S(utc(2026, 3, 28, 0), utc(2026, 3, 28, 8))


# --- several at once, overrides -------------------------------------------------------------------


def test_two_on_call_at_once_with_a_config_override(config: TocsinConfig) -> None:
    assert spans(config, "pairs", utc(2026, 1, 5, 0), utc(2026, 1, 6, 0)) == [
        S(utc(2026, 1, 5, 0), utc(2026, 1, 5, 6), "a", "b"),
        S(utc(2026, 1, 5, 6), utc(2026, 1, 5, 8), "d"),
        S(utc(2026, 1, 5, 8), utc(2026, 1, 5, 12), "a", "b"),
        S(utc(2026, 1, 5, 12), utc(2026, 1, 6, 0), "b", "c"),
    ]


def test_runtime_overrides_win_over_all_and_can_overlap_other_users(
    config: TocsinConfig,
) -> None:
    schedule = config.schedule("pairs")
    runtime = [
        OverrideSpan("c", utc(2026, 1, 5, 7), utc(2026, 1, 5, 9), "o1"),
    ]
    assert render(schedule, utc(2026, 1, 5, 5), utc(2026, 1, 5, 10), runtime) == [
        S(utc(2026, 1, 5, 5), utc(2026, 1, 5, 6), "a", "b"),
        S(utc(2026, 1, 5, 6), utc(2026, 1, 5, 7), "d"),
        S(utc(2026, 1, 5, 7), utc(2026, 1, 5, 8), "c", "d"),
        S(utc(2026, 1, 5, 8), utc(2026, 1, 5, 9), "c"),
        S(utc(2026, 1, 5, 9), utc(2026, 1, 5, 10), "a", "b"),
    ]
    assert who_is_on_call(schedule, utc(2026, 1, 5, 8, 30), runtime) == ["c"]


def test_each_layer_rendered_alone_is_what_the_final_schedule_is_made_of(
    config: TocsinConfig,
) -> None:
    schedule = config.schedule("weekends")
    since, until = utc(2026, 1, 9, 11), utc(2026, 1, 12, 11)
    week, weekend = render_layers(schedule, since, until)
    assert week == [S(since, until, "a")]  # the first layer alone covers all of it
    assert weekend == [S(utc(2026, 1, 9, 16), utc(2026, 1, 12, 8), "b")]  # no gaps listed
    # A restricted layer alone: only its windows; before the layer's start: nothing.
    (nights,) = render_layers(config.schedule("nights"), utc(2026, 1, 4, 0), utc(2026, 1, 6, 12))
    assert nights == [
        S(utc(2026, 1, 5, 0), utc(2026, 1, 5, 6), "a"),
        S(utc(2026, 1, 5, 22), utc(2026, 1, 6, 6), "a"),
    ]
    # Overrides are not part of any layer.
    (pairs,) = render_layers(config.schedule("pairs"), utc(2026, 1, 5, 0), utc(2026, 1, 6, 0))
    assert pairs == [
        S(utc(2026, 1, 5, 0), utc(2026, 1, 5, 12), "a", "b"),
        S(utc(2026, 1, 5, 12), utc(2026, 1, 6, 0), "b", "c"),
    ]
    assert render_layers(schedule, until, since) == [[], []]


def test_a_layer_s_handoff_stays_at_the_wall_clock_across_dst(config: TocsinConfig) -> None:
    (layer,) = render_layers(
        config.schedule("berlin-weekly"), utc(2026, 3, 23, 8), utc(2026, 4, 6, 7)
    )
    assert layer == spans(config, "berlin-weekly", utc(2026, 3, 23, 8), utc(2026, 4, 6, 7))


def test_overrides_in_a_range_from_the_file_and_at_runtime_by_start(config: TocsinConfig) -> None:
    schedule = config.schedule("pairs")
    early = OverrideSpan("c", utc(2026, 1, 5, 1), utc(2026, 1, 5, 2), "o-early", "rita")
    later = OverrideSpan("a", utc(2026, 1, 5, 7), utc(2026, 1, 5, 9), "o-later")
    outside = OverrideSpan("b", utc(2026, 1, 6, 0), utc(2026, 1, 6, 1), "o-outside")
    found = overrides_in(schedule, utc(2026, 1, 5, 0), utc(2026, 1, 6, 0), [later, outside, early])
    assert [(o.override_id, fixed) for o, fixed in found] == [
        ("o-early", False),
        ("config:0", True),  # d, 06:00-08:00, from the file
        ("o-later", False),
    ]
    assert found[0][0].created_by == "rita"
    # Touching the range is enough; ending at its start is not.
    assert [
        o.override_id for o, _ in overrides_in(schedule, utc(2026, 1, 5, 7), utc(2026, 1, 5, 8))
    ] == ["config:0"]
    assert overrides_in(schedule, utc(2026, 1, 5, 8), utc(2026, 1, 5, 9)) == []


def test_before_every_layer_starts_is_a_gap(config: TocsinConfig) -> None:
    assert spans(config, "pairs", utc(2026, 1, 4, 0), utc(2026, 1, 5, 6)) == [
        S(utc(2026, 1, 4, 0), utc(2026, 1, 5, 0)),
        S(utc(2026, 1, 5, 0), utc(2026, 1, 5, 6), "a", "b"),
    ]


def test_an_empty_or_huge_range(config: TocsinConfig) -> None:
    assert spans(config, "pairs", utc(2026, 1, 5, 0), utc(2026, 1, 5, 0)) == []
    hourly = config.schedule("ny-hourly-autumn")
    with pytest.raises(RangeTooLong):
        render(hourly, utc(2026, 11, 1, 0), utc(2026, 11, 1, 0) + timedelta(days=3000))


# --- iCal -----------------------------------------------------------------------------------------


def unfold(text: str) -> list[str]:
    assert text.endswith("\r\n")
    return text.replace("\r\n ", "").split("\r\n")[:-1]


def test_ical_export_is_one_event_per_span(config: TocsinConfig) -> None:
    schedule = config.schedule("nights")
    rendered = render(schedule, utc(2026, 1, 5, 0), utc(2026, 1, 6, 12))
    text = ical(schedule, rendered, utc(2026, 1, 1), {"a": "Ada, the night owl; on call"})
    lines = unfold(text)
    assert lines[0] == "BEGIN:VCALENDAR"
    assert lines[-1] == "END:VCALENDAR"
    assert "VERSION:2.0" in lines
    assert lines.count("BEGIN:VEVENT") == lines.count("END:VEVENT") == 4
    assert [x for x in lines if x.startswith("DTSTART:")] == [
        "DTSTART:20260105T000000Z",
        "DTSTART:20260105T060000Z",
        "DTSTART:20260105T220000Z",
        "DTSTART:20260106T060000Z",
    ]
    assert "DTEND:20260105T060000Z" in lines
    assert "SUMMARY:On call: Ada\\, the night owl\\; on call" in lines
    assert "SUMMARY:Coverage gap" in lines
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    uids = [x for x in lines if x.startswith("UID:")]
    assert len(set(uids)) == 4
