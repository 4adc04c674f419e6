"""Report periods: days, ISO weeks (Monday first) and calendar months in a chosen time zone.

A period starts at local midnight in the zone, so a day is 23 or 25 hours long across a
daylight-saving change, and a Berlin week begins at Monday 00:00 Berlin time. This is what
PostgreSQL computes with ``date_trunc('week', at AT TIME ZONE zone) AT TIME ZONE zone``,
so a report grouped in SQL and a trend computed here agree on the boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["Period", "PeriodUnit", "period_of", "periods_between"]

PeriodUnit = Literal["day", "week", "month"]
_UNITS = ("day", "week", "month")


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC, the ``unit`` that starts on local date ``label``."""

    unit: PeriodUnit
    time_zone: str
    label: date
    start: datetime
    end: datetime

    def previous(self) -> Period:
        """The period before this one."""
        return period_of(self.start - timedelta(microseconds=1), self.unit, self.time_zone)

    def next(self) -> Period:
        """The period after this one."""
        return period_of(self.end, self.unit, self.time_zone)


def _first_day(day: date, unit: PeriodUnit) -> date:
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _following(day: date, unit: PeriodUnit) -> date:
    if unit == "day":
        return day + timedelta(days=1)
    if unit == "week":
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period_of(at: datetime, unit: PeriodUnit, time_zone: str) -> Period:
    """The period of ``unit`` in ``time_zone`` that contains the instant ``at``."""
    if unit not in _UNITS:
        raise ValueError(f"unit: {unit!r} is not one of {', '.join(_UNITS)}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at: {at.isoformat()} has no time zone; pass an aware datetime")
    zone = ZoneInfo(time_zone)
    first = _first_day(at.astimezone(zone).date(), unit)
    return Period(
        unit, time_zone, first, _midnight(first, zone), _midnight(_following(first, unit), zone)
    )


def periods_between(
    start: datetime, end: datetime, unit: PeriodUnit, time_zone: str
) -> list[Period]:
    """Every period that overlaps ``[start, end)``, in order."""
    if end <= start:
        return []
    periods = [period_of(start, unit, time_zone)]
    while periods[-1].end < end:
        periods.append(periods[-1].next())
    return periods
