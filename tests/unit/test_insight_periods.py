"""Report periods in a time zone: local-midnight boundaries, ISO weeks, months, DST days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from tocsin_insight.domain.periods import period_of, periods_between


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]


def test_berlin_week() -> None:
    week = period_of(utc(2026, 12, 4, 10), "week", "Europe/Berlin")
    assert week.label == date(2026, 11, 30)  # the Monday
    assert (week.start, week.end) == (utc(2026, 11, 29, 23), utc(2026, 12, 6, 23))
    # 23:30 UTC on Sunday is 00:30 on Monday in Berlin: the next week already.
    assert period_of(utc(2026, 12, 6, 23, 30), "week", "Europe/Berlin").label == date(2026, 12, 7)
    assert period_of(utc(2026, 12, 6, 23, 30), "week", "UTC").label == date(2026, 11, 30)


def test_days_across_dst_are_23_and_25_hours() -> None:
    spring = period_of(utc(2026, 3, 29, 12), "day", "Europe/Berlin")
    assert (spring.start, spring.end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert spring.end - spring.start == timedelta(hours=23)
    autumn = period_of(utc(2026, 10, 25, 12), "day", "Europe/Berlin")
    assert autumn.end - autumn.start == timedelta(hours=25)


def test_months_and_neighbours() -> None:
    december = period_of(utc(2026, 12, 15), "month", "America/New_York")
    assert (december.label, december.start, december.end) == (
        date(2026, 12, 1),
        utc(2026, 12, 1, 5),
        utc(2027, 1, 1, 5),
    )
    november = december.previous()
    assert (november.label, november.start, november.end) == (
        date(2026, 11, 1),
        utc(2026, 11, 1, 4),  # still summer time on 1 November
        utc(2026, 12, 1, 5),
    )
    assert november.next() == december
    assert december.next().label == date(2027, 1, 1)


def test_periods_between() -> None:
    weeks = periods_between(utc(2026, 11, 25), utc(2026, 12, 8), "week", "UTC")
    assert [w.label for w in weeks] == [date(2026, 11, 23), date(2026, 11, 30), date(2026, 12, 7)]
    assert periods_between(utc(2026, 12, 8), utc(2026, 12, 8), "day", "UTC") == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unit"):
        period_of(utc(2026, 12, 4), "year", "UTC")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no time zone"):
        period_of(datetime(2026, 12, 4), "day", "UTC")
