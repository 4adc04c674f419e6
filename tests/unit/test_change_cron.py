"""Cron expressions of freeze windows: parsing, day matching, fire times across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tocsin_common.change.cron import CronError, parse_cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "minutes", "hours", "days", "months", "weekdays"),
    [
        ("* * * * *", 60, 24, 31, 12, 7),
        ("0 18 * * fri", 1, 1, 31, 12, 1),
        ("*/15 9-17 * * mon-fri", 4, 9, 31, 12, 5),
        ("0,30 0 1,15 jan,jul *", 2, 1, 2, 2, 7),
        ("5 4 * * 7", 1, 1, 31, 12, 1),  # 7 is Sunday, like 0
        ("0 0 * * 0,7", 1, 1, 31, 12, 1),
        ("10-50/20 * * * *", 3, 24, 31, 12, 7),
        ("5/20 * * * *", 3, 24, 31, 12, 7),  # a/n runs to the end of the range
        ("@daily", 1, 1, 31, 12, 7),
        ("@hourly", 1, 24, 31, 12, 7),
        ("@weekly", 1, 1, 31, 12, 1),
    ],
)
def test_parse(
    expression: str, minutes: int, hours: int, days: int, months: int, weekdays: int
) -> None:
    cron = parse_cron(expression)
    assert (len(cron.minutes), len(cron.hours), len(cron.days)) == (minutes, hours, days)
    assert (len(cron.months), len(cron.weekdays)) == (months, weekdays)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("0 18 * *", "has 4 fields"),
        ("60 * * * *", "minute: 60 is out of range (0-59)"),
        ("0 24 * * *", "hour: 24 is out of range"),
        ("0 0 0 * *", "day of month: 0 is out of range (1-31)"),
        ("0 0 * 13 *", "month: 13 is out of range"),
        ("0 0 * * 8", "day of week: 8 is out of range"),
        ("0 0 * * funday", "day of week: 'funday' is not a number"),
        ("*/0 * * * *", "step '0' must be a whole number above 0"),
        ("0 17-9 * * *", "hour: range '17-9' ends before it starts"),
        ("0,,5 * * * *", "minute: empty list item"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("@often", "has 1 fields"),
        ("0 " * 200, "longer than 200 characters"),
    ],
)
def test_parse_errors_name_the_field(expression: str, fragment: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expression)
    assert fragment in str(caught.value)


def test_feb_29_is_possible() -> None:
    cron = parse_cron("0 0 29 2 *")
    assert cron.matches_day(date(2028, 2, 29)) and not cron.matches_day(date(2027, 3, 1))


@pytest.mark.parametrize(
    ("expression", "day", "expected"),
    [
        ("0 0 13 * fri", date(2026, 2, 13), True),  # both restricted: either matches
        ("0 0 13 * fri", date(2026, 2, 20), True),  # a Friday, not the 13th
        ("0 0 13 * fri", date(2026, 2, 14), False),
        ("0 0 * * fri", date(2026, 2, 14), False),  # day of month '*': weekday decides
        ("0 0 */2 * *", date(2026, 2, 3), True),
        ("0 0 */2 * *", date(2026, 2, 4), False),
        ("0 0 * dec *", date(2026, 12, 24), True),
        ("0 0 * dec *", date(2026, 11, 24), False),
    ],
)
def test_matches_day(expression: str, day: date, expected: bool) -> None:
    assert parse_cron(expression).matches_day(day) is expected


@pytest.mark.parametrize(
    ("expression", "zone", "start", "end", "expected"),
    [
        # Spring forward in Berlin, 2026-03-29 02:00 -> 03:00: 02:30 does not exist that
        # night and fires 30 minutes past the change (03:30 CEST = 01:30 UTC).
        (
            "30 2 * * *",
            BERLIN,
            utc(2026, 3, 28),
            utc(2026, 3, 31),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)],
        ),
        # Fall back in Berlin, 2026-10-25 03:00 -> 02:00: 02:30 happens twice, fires once
        # (the first, CEST: 00:30 UTC).
        (
            "30 2 * * *",
            BERLIN,
            utc(2026, 10, 24),
            utc(2026, 10, 27),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # Every half hour across the spring gap: 02:00 and 02:30 map onto 03:00 and 03:30,
        # each fire time once.
        (
            "0,30 * * * *",
            BERLIN,
            utc(2026, 3, 29, 0, 0),
            utc(2026, 3, 29, 2, 0),
            [
                utc(2026, 3, 29, 0, 0),
                utc(2026, 3, 29, 0, 30),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 29, 1, 30),
            ],
        ),
        # New York's own dates (2026-03-08), in its own zone.
        (
            "0 9 * * *",
            NEW_YORK,
            utc(2026, 3, 7),
            utc(2026, 3, 9),
            [utc(2026, 3, 7, 14, 0), utc(2026, 3, 8, 13, 0)],
        ),
    ],
)
def test_fire_times_across_dst(
    expression: str, zone: ZoneInfo, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    assert list(parse_cron(expression).fire_times(zone, start, end)) == expected


def test_last_and_next_fire() -> None:
    cron = parse_cron("0 18 * * fri")
    at = utc(2026, 3, 30, 7, 0)  # Monday 09:00 CEST
    assert cron.last_fire(BERLIN, at, at - timedelta(days=7)) == utc(2026, 3, 27, 17, 0)
    assert cron.last_fire(BERLIN, at, at - timedelta(days=2)) is None
    assert cron.next_fire(BERLIN, at, at + timedelta(days=7)) == utc(2026, 4, 3, 16, 0)
    assert cron.next_fire(BERLIN, at, at + timedelta(days=1)) is None
    # At the fire time itself: it is the last fire, and not the next one.
    fire = utc(2026, 4, 3, 16, 0)
    assert cron.last_fire(BERLIN, fire, fire - timedelta(hours=1)) == fire
    assert cron.next_fire(BERLIN, fire, fire + timedelta(days=8)) == utc(2026, 4, 10, 16, 0)
