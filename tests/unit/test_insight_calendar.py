"""Business-time clocks and SLA outcomes on hand-computed fixtures: weekends, holidays,
daylight-saving changes both ways, windows across midnight, 24x7."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from tocsin_common.config import parse_config
from tocsin_insight.domain.calendar import (
    Calendar,
    WeeklyWindow,
    business_deadline,
    business_intervals,
    business_seconds,
    calendar_from_config,
)
from tocsin_insight.domain.sla import (
    Attainment,
    Breach,
    SlaTargets,
    attainment,
    breaches,
    clock_outcome,
    sla_outcome,
    sla_targets,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = 3600


def weekdays(start: time, end: time) -> tuple[WeeklyWindow, ...]:
    return tuple(WeeklyWindow(d, start, end) for d in range(5))


def every_day(start: time, end: time) -> tuple[WeeklyWindow, ...]:
    return tuple(WeeklyWindow(d, start, end) for d in range(7))


OFFICE = Calendar("Europe/Berlin", weekdays(time(9), time(17)), frozenset({date(2026, 12, 25)}))
NIGHTS = Calendar("Europe/Berlin", every_day(time(22), time(6)))


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc,arg-type]


# 2026-12-04 is a Friday; 2026-12-25 a Friday (holiday); 2026-03-29 and 2026-10-25 are the
# Sundays Europe/Berlin goes to and from summer time.


def test_weekend_is_skipped() -> None:
    # Friday 16:00 -> Monday 10:00: one hour on Friday, one on Monday.
    assert business_seconds(OFFICE, berlin(2026, 12, 4, 16), berlin(2026, 12, 7, 10)) == 2 * H
    assert business_seconds(OFFICE, berlin(2026, 12, 5, 12), berlin(2026, 12, 6, 20)) == 0
    # A whole working week.
    assert business_seconds(OFFICE, berlin(2026, 11, 30), berlin(2026, 12, 7)) == 40 * H


def test_holiday_is_skipped() -> None:
    # Thursday 24th 16:00 -> Monday 28th 10:00: Friday 25th is a holiday.
    start, end = berlin(2026, 12, 24, 16), berlin(2026, 12, 28, 10)
    assert business_seconds(OFFICE, start, end) == 2 * H
    no_holiday = Calendar("Europe/Berlin", OFFICE.windows)
    assert business_seconds(no_holiday, start, end) == 10 * H


def test_instants_in_other_zones_are_the_same_instants() -> None:
    # 08:30 UTC on a December Monday is 09:30 in Berlin.
    start = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    end = datetime(2026, 12, 7, 4, 0, tzinfo=NEW_YORK)  # 09:00 UTC = 10:00 Berlin
    assert business_seconds(OFFICE, start, end) == 30 * 60


def test_dst_spring_forward_shortens_a_night_shift() -> None:
    # 22:00 Saturday -> 06:00 Sunday across 02:00 -> 03:00: 7 real hours.
    start, end = berlin(2026, 3, 28, 21), berlin(2026, 3, 29, 7)
    assert business_seconds(NIGHTS, start, end) == 7 * H
    assert business_intervals(NIGHTS, start, end) == [
        (datetime(2026, 3, 28, 21, tzinfo=UTC), datetime(2026, 3, 29, 4, tzinfo=UTC))
    ]


def test_dst_fall_back_lengthens_a_night_shift() -> None:
    # 22:00 Saturday -> 06:00 Sunday across 03:00 -> 02:00: 9 real hours.
    assert business_seconds(NIGHTS, berlin(2026, 10, 24, 21), berlin(2026, 10, 25, 7)) == 9 * H


def test_office_day_is_eight_hours_either_side_of_dst() -> None:
    # Friday 27 March 09:00 (CET) -> Monday 30 March 17:00 (CEST): 8 h + 8 h.
    assert business_seconds(OFFICE, berlin(2026, 3, 27, 9), berlin(2026, 3, 30, 17)) == 16 * H
    assert business_seconds(OFFICE, berlin(2026, 10, 23, 9), berlin(2026, 10, 26, 17)) == 16 * H


def test_skipped_and_repeated_local_times() -> None:
    # 02:30 does not exist on 29 March: read with the old offset, it is 03:30 CEST, so a
    # 02:30-04:00 window lasts 30 minutes. On 25 October 02:30 happens twice: the first
    # (CEST) is meant, so 02:30-03:30 lasts 2 hours.
    spring = Calendar("Europe/Berlin", (WeeklyWindow(6, time(2, 30), time(4)),))
    assert business_seconds(spring, berlin(2026, 3, 29, 0), berlin(2026, 3, 29, 12)) == 30 * 60
    autumn = Calendar("Europe/Berlin", (WeeklyWindow(6, time(2, 30), time(3, 30)),))
    assert business_seconds(autumn, berlin(2026, 10, 25, 0), berlin(2026, 10, 25, 12)) == 2 * H


def test_window_across_midnight_belongs_to_its_start_day() -> None:
    saturday_night = Calendar("America/New_York", (WeeklyWindow(5, time(22), time(6)),))
    ny = NEW_YORK
    # Saturday 5 Dec 23:00 -> Sunday 01:00, and Sunday 05:00 -> 07:00 (one hour left).
    sat_23 = datetime(2026, 12, 5, 23, tzinfo=ny)
    assert business_seconds(saturday_night, sat_23, datetime(2026, 12, 6, 1, tzinfo=ny)) == 2 * H
    sun_5, sun_7 = datetime(2026, 12, 6, 5, tzinfo=ny), datetime(2026, 12, 6, 7, tzinfo=ny)
    assert business_seconds(saturday_night, sun_5, sun_7) == 1 * H
    # A holiday on Saturday cancels the whole shift, Sunday morning included.
    off = Calendar("America/New_York", saturday_night.windows, frozenset({date(2026, 12, 5)}))
    assert business_seconds(off, sun_5, sun_7) == 0
    # A holiday on Sunday does not cut the shift that started on Saturday.
    sunday_off = Calendar(
        "America/New_York", saturday_night.windows, frozenset({date(2026, 12, 6)})
    )
    assert business_seconds(sunday_off, sun_5, sun_7) == 1 * H


def test_whole_day_and_overlapping_windows() -> None:
    whole_monday = Calendar("UTC", (WeeklyWindow(0, time(0), time(0)),))
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    assert (
        business_seconds(whole_monday, monday - timedelta(days=1), monday + timedelta(days=2))
        == 24 * H
    )
    overlapping = Calendar(
        "UTC", (WeeklyWindow(0, time(9), time(17)), WeeklyWindow(0, time(12), time(18)))
    )
    assert business_seconds(overlapping, monday, monday + timedelta(days=1)) == 9 * H


def test_24x7_counts_every_second_and_reversed_ranges_are_zero() -> None:
    start = berlin(2026, 3, 28, 21)
    end = berlin(2026, 3, 29, 7)  # 10 wall-clock hours, 9 real ones
    assert business_seconds(None, start, end) == 9 * H
    assert business_seconds(None, end, start) == 0
    assert business_seconds(OFFICE, end, start) == 0
    assert business_seconds(None, start, start + timedelta(microseconds=1500)) == 0.0015


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        business_seconds(OFFICE, datetime(2026, 12, 7, 9), berlin(2026, 12, 7, 10))


def test_deadlines() -> None:
    # Friday 16:00 + 2 business hours = Monday 10:00 Berlin (09:00 UTC).
    assert business_deadline(OFFICE, berlin(2026, 12, 4, 16), 2 * H) == datetime(
        2026, 12, 7, 9, tzinfo=UTC
    )
    # Due exactly at the end of a window: Friday 17:00, not Monday 09:00.
    assert business_deadline(OFFICE, berlin(2026, 12, 4, 16), 1 * H) == berlin(2026, 12, 4, 17)
    # Starting on a weekend: the clock starts Monday 09:00.
    assert business_deadline(OFFICE, berlin(2026, 12, 5, 10), 1800) == berlin(2026, 12, 7, 9, 30)
    assert business_deadline(OFFICE, berlin(2026, 12, 5, 10), 0) == berlin(2026, 12, 7, 9)
    # Across the Christmas holiday.
    assert business_deadline(OFFICE, berlin(2026, 12, 24, 16), 2 * H) == berlin(2026, 12, 28, 10)
    # Across spring forward: 7 h in Saturday night's shift, the last half hour on Sunday night.
    assert business_deadline(NIGHTS, berlin(2026, 3, 28, 22), 7.5 * H) == berlin(
        2026, 3, 29, 22, 30
    )
    assert business_deadline(None, berlin(2026, 3, 28, 22), 7.5 * H) == datetime(
        2026, 3, 29, 4, 30, tzinfo=UTC
    )


def test_deadline_and_seconds_agree() -> None:
    start = berlin(2026, 12, 3, 11, 17)
    for target in (60, 5 * H, 17 * H + 5, 100 * H):
        due = business_deadline(OFFICE, start, target)
        assert business_seconds(OFFICE, start, due) == target


def test_deadline_out_of_reach_is_an_error() -> None:
    one_hour_a_week = Calendar("UTC", (WeeklyWindow(0, time(9), time(10)),), id="tiny")
    with pytest.raises(ValueError, match="'tiny' has fewer than"):
        business_deadline(one_hour_a_week, berlin(2026, 12, 4), 1000 * H)
    with pytest.raises(ValueError, match="negative"):
        business_deadline(OFFICE, berlin(2026, 12, 4), -1)


def test_calendar_from_config() -> None:
    config = parse_config(
        """\
version: 1
insight:
  calendars:
    - id: office
      time_zone: Europe/Berlin
      hours:
        - {days: [monday, friday], start: "09:00", end: "12:00"}
        - {days: [saturday], start: "22:00", end: "02:00"}
      holidays: [2026-12-25]
"""
    )
    calendar = calendar_from_config(config.insight.calendar("office"))
    assert calendar.id == "office" and calendar.holidays == frozenset({date(2026, 12, 25)})
    assert sorted((w.weekday, w.start, w.end) for w in calendar.windows) == [
        (0, time(9), time(12)),
        (4, time(9), time(12)),
        (5, time(22), time(2)),
    ]


# --- SLA outcomes -----------------------------------------------------------------------------

P3 = SlaTargets("P3", timedelta(hours=1), timedelta(hours=8), OFFICE)
CREATED = berlin(2026, 12, 4, 16, 30)  # Friday, 30 business minutes before the weekend


def test_ack_within_target_over_the_weekend() -> None:
    outcome = sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 20), None, berlin(2026, 12, 7, 12))
    assert outcome.ack is not None
    assert outcome.ack.status == "met"
    assert outcome.ack.elapsed_seconds == 50 * 60
    assert outcome.ack.breached_by_seconds == 0
    assert outcome.ack.deadline == berlin(2026, 12, 7, 9, 30)
    assert outcome.calendar_id == "" and outcome.priority == "P3"


def test_ack_breached_by_business_minutes() -> None:
    outcome = sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 45), None, berlin(2026, 12, 7, 12))
    assert outcome.ack is not None and outcome.ack.status == "breached"
    assert outcome.ack.breached_by_seconds == 15 * 60
    assert outcome.breached


def test_resolve_without_ack_stops_the_ack_clock() -> None:
    resolved = berlin(2026, 12, 4, 16, 40)
    outcome = sla_outcome(P3, CREATED, None, resolved, berlin(2026, 12, 9))
    assert outcome.ack is not None and outcome.ack.status == "met"
    assert outcome.ack.elapsed_seconds == 600 and outcome.ack.stopped_at == resolved
    assert outcome.resolve is not None and outcome.resolve.status == "met"
    # An ack after the resolve does not restart the ack clock.
    later = sla_outcome(P3, CREATED, berlin(2026, 12, 7, 11), resolved, berlin(2026, 12, 9))
    assert later.ack == outcome.ack


def test_open_incident_is_pending_then_breached() -> None:
    before = sla_outcome(P3, CREATED, None, None, berlin(2026, 12, 7, 9, 10))
    assert before.ack is not None and before.ack.status == "pending"
    assert before.ack.elapsed_seconds == 40 * 60 and before.ack.breached_by_seconds == 0
    assert before.resolve is not None and before.resolve.status == "pending"
    assert not before.breached
    after = sla_outcome(P3, CREATED, None, None, berlin(2026, 12, 7, 9, 40))
    assert after.ack is not None and after.ack.status == "breached"
    assert after.ack.breached_by_seconds == 10 * 60
    # Resolve target: 8 business hours = Friday 30 min + Monday 7.5 h -> Monday 16:30.
    assert after.resolve is not None and after.resolve.deadline == berlin(2026, 12, 7, 16, 30)


def test_target_absent_means_no_clock_and_24x7_counts_the_weekend() -> None:
    p1 = SlaTargets("P1", None, timedelta(hours=4), None)
    outcome = sla_outcome(p1, CREATED, None, berlin(2026, 12, 5, 16, 30), berlin(2026, 12, 9))
    assert outcome.ack is None and outcome.calendar_id == "24x7"
    assert outcome.resolve is not None and outcome.resolve.status == "breached"
    assert outcome.resolve.breached_by_seconds == 20 * H
    assert outcome.resolve.deadline == berlin(2026, 12, 4, 20, 30)


def test_exactly_on_target_is_met() -> None:
    done = clock_outcome(OFFICE, timedelta(hours=1), CREATED, berlin(2026, 12, 7, 9, 30), CREATED)
    assert done.status == "met" and done.elapsed_seconds == 3600


def test_sla_targets_from_config() -> None:
    config = parse_config(
        """\
version: 1
services: [{id: web, name: Web, escalation_policy: pol, team: sre}]
teams: [{id: sre, name: SRE, members: [alice]}]
users: [{id: alice, name: Alice, email: alice@example.com}]
escalation_policies:
  - {id: pol, name: Pol, levels: [{delay: 5m, targets: [{type: user, id: alice}]}]}
insight:
  calendars:
    - id: office
      time_zone: Europe/Berlin
      teams: [sre]
      hours: [{days: [monday, tuesday, wednesday, thursday, friday], start: "09:00", end: "17:00"}]
  priorities: [{id: P1, severities: [critical]}, {id: P3}]
  sla_policies:
    - {priority: P1, ack_target: 5m}
    - {priority: P3, ack_target: 1h, resolve_target: 8h, calendar: business}
"""
    )
    insight = config.insight
    p1 = sla_targets(insight, "P1", "sre")
    assert p1 == SlaTargets("P1", timedelta(minutes=5), None, None)
    p3 = sla_targets(insight, "P3", "sre")
    assert p3 is not None and p3.calendar is not None and p3.calendar_id == "office"
    assert sla_targets(insight, None, "sre") is None
    assert sla_targets(insight, "P9", "sre") is None
    outcome = sla_outcome(p3, CREATED, berlin(2026, 12, 7, 9, 20), None, CREATED)
    assert outcome.ack is not None and outcome.ack.elapsed_seconds == 50 * 60


def test_attainment_rates_leave_pending_clocks_out() -> None:
    now = berlin(2026, 12, 7, 9, 40)
    outcomes = [
        sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 20), None, now),  # ack met (50 min)
        sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 45), None, now),  # breached by 15 min
        sla_outcome(P3, CREATED, None, None, now),  # open past the deadline: breached by 10
        sla_outcome(P3, berlin(2026, 12, 7, 9, 30), None, None, now),  # pending (10 min in)
        sla_outcome(SlaTargets("P1", None, timedelta(hours=4), None), CREATED, None, None, now),
    ]
    ack, resolve = attainment(outcomes)
    assert ack == Attainment(
        met=1, breached=2, pending=1, rate=1 / 3, breached_by_seconds_total=1500
    )
    assert (resolve.met, resolve.breached, resolve.pending) == (0, 1, 4)
    assert resolve.rate == 0
    empty_ack, _ = attainment([])
    assert empty_ack.rate is None


def test_breach_list_worst_first() -> None:
    now = berlin(2026, 12, 7, 9, 40)
    outcomes = [
        ("inc-a", sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 45), None, now)),
        ("inc-b", sla_outcome(P3, CREATED, None, None, now)),
        ("inc-c", sla_outcome(P3, CREATED, berlin(2026, 12, 7, 9, 20), None, now)),
    ]
    assert breaches(outcomes) == [
        Breach("inc-a", "P3", "ack", berlin(2026, 12, 7, 9, 30), 900, pending=False),
        Breach("inc-b", "P3", "ack", berlin(2026, 12, 7, 9, 30), 600, pending=True),
    ]
