"""Business time: how many seconds of a team's working hours lie between two instants, and
the instant a business-time target falls due.

A :class:`Calendar` is weekly working hours in one time zone minus holidays (see
docs/insight.md#business-calendars). ``None`` stands for the 24x7 calendar: every second
counts. Pure functions: instants in, numbers and instants out; zones come from zoneinfo.

Rules, with the reasons:

- Hours are local wall-clock times; each working window is turned into real instants on its
  own day, so across a daylight-saving change the clock counts the seconds that really
  elapsed (a 22:00-06:00 shift lasts 7 h on the night the clocks go forward, 9 h on the night
  they go back; a 09:00-17:00 day is 8 h on either day).
- A local time that does not exist (in the skipped hour) is read with the offset before the
  change (02:30 becomes 03:30), one that happens twice as its first occurrence (``fold=0``).
- An ``end`` at or before ``start`` runs to that time of the next day; the window belongs to
  the day it starts on, so a holiday cancels the windows that *start* on it.
- Overlapping windows count once.
- All arithmetic is in whole microseconds since the epoch: no float drift, and never the
  naive subtraction Python applies to two datetimes sharing a tzinfo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tocsin_common.config import BusinessCalendar

__all__ = [
    "Calendar",
    "WeeklyWindow",
    "business_deadline",
    "business_intervals",
    "business_seconds",
    "calendar_from_config",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# How far business_deadline looks ahead before deciding a calendar has no hours left.
_MAX_DAYS_AHEAD = 366 * 5


@dataclass(frozen=True)
class WeeklyWindow:
    """Working hours on one weekday (0 = Monday): ``start`` to ``end``, local time; an
    ``end`` at or before ``start`` is on the next day."""

    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday: {self.weekday} is not 0 (Monday) to 6 (Sunday)")


@dataclass(frozen=True)
class Calendar:
    """Weekly working hours in ``time_zone`` without ``holidays`` (local dates)."""

    time_zone: str
    windows: tuple[WeeklyWindow, ...]
    holidays: frozenset[date] = frozenset()
    id: str = ""
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _by_day: tuple[tuple[WeeklyWindow, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("windows: a calendar needs at least one working window")
        object.__setattr__(self, "_zone", ZoneInfo(self.time_zone))
        by_day = tuple(tuple(w for w in self.windows if w.weekday == d) for d in range(7))
        object.__setattr__(self, "_by_day", by_day)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def day_intervals(self, day: date) -> Iterator[tuple[int, int]]:
        """The working windows that start on local date ``day``, as epoch microseconds."""
        if day in self.holidays:
            return
        for window in self._by_day[day.weekday()]:
            end_day = day if window.end > window.start else day + _DAY
            start = _micros(datetime.combine(day, window.start, tzinfo=self._zone))
            end = _micros(datetime.combine(end_day, window.end, tzinfo=self._zone))
            if end > start:
                yield start, end


def calendar_from_config(config: BusinessCalendar) -> Calendar:
    """The :class:`Calendar` of a configured business calendar."""
    windows = tuple(
        WeeklyWindow(_WEEKDAYS.index(day), hours.start, hours.end)
        for hours in config.hours
        for day in hours.days
    )
    return Calendar(config.time_zone, windows, frozenset(config.holidays), config.id)


def _micros(at: datetime) -> int:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; pass an aware datetime")
    return (at - _EPOCH) // _US


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _local_day(micros: int, calendar: Calendar) -> date:
    return _instant(micros).astimezone(calendar.zone).date()


def _merged(calendar: Calendar, first: date, last: date) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    day = first
    while day <= last:
        spans.extend(calendar.day_intervals(day))
        day += _DAY
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def business_intervals(
    calendar: Calendar, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The business-hour intervals within ``[start, end)``, merged, in order (UTC)."""
    lo, hi = _micros(start), _micros(end)
    if hi <= lo:
        return []
    first = _local_day(lo, calendar) - _DAY  # a window of the day before may run past midnight
    last = _local_day(hi, calendar)
    out: list[tuple[datetime, datetime]] = []
    for s, e in _merged(calendar, first, last):
        s, e = max(s, lo), min(e, hi)
        if e > s:
            out.append((_instant(s), _instant(e)))
    return out


def business_seconds(calendar: Calendar | None, start: datetime, end: datetime) -> float:
    """Seconds of business time in ``[start, end)``; 0 when ``end <= start``. With
    ``calendar=None`` (24x7) every elapsed second counts."""
    lo, hi = _micros(start), _micros(end)
    if hi <= lo:
        return 0.0
    if calendar is None:
        return (hi - lo) / 1e6
    first = _local_day(lo, calendar) - _DAY
    last = _local_day(hi, calendar)
    total = 0
    for s, e in _merged(calendar, first, last):
        s, e = max(s, lo), min(e, hi)
        if e > s:
            total += e - s
    return total / 1e6


def business_deadline(calendar: Calendar | None, start: datetime, seconds: float) -> datetime:
    """The instant at which ``seconds`` of business time have passed since ``start`` (UTC).

    A target that falls exactly at the end of a working window is due then, not at the next
    window's start. Raises ValueError for a negative target, or when the calendar has not
    enough working hours in the next five years (every day a holiday).
    """
    if seconds < 0:
        raise ValueError(f"seconds: {seconds} is negative")
    lo = _micros(start)
    remaining = round(seconds * 1e6)
    if calendar is None:
        return _instant(lo + remaining)
    cursor = lo
    day = _local_day(lo, calendar) - _DAY
    last_day = day + timedelta(days=_MAX_DAYS_AHEAD)
    while day <= last_day:
        block_end = day + timedelta(days=6)
        for s, e in _merged(calendar, day, block_end):
            s = max(s, cursor)
            if e <= s:
                continue
            if e - s >= remaining:  # 0: the first business instant from start
                return _instant(s + remaining)
            remaining -= e - s
            cursor = e
        day = block_end + _DAY
    raise ValueError(
        f"calendar {calendar.id or calendar.time_zone!r} has fewer than {seconds:g} seconds "
        f"of business hours in the {_MAX_DAYS_AHEAD} days after {start.isoformat()}"
    )
