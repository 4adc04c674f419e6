"""Cron expressions for freeze windows: five fields read in a time zone (pure, no I/O).

``minute hour day-of-month month day-of-week``, as Vixie cron and Argo CD's sync windows
read them: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``,
month and day names (``jan``, ``mon``), ``7`` for Sunday, and the macros ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``. When both
day fields are restricted (neither starts with ``*``) a day matches if either matches.

Fire times are local wall-clock times in the zone. Across DST: a local time that does not
exist (skipped by a spring-forward) fires at the same distance past the change (02:30 in a
02:00→03:00 gap fires at 03:30), as zoneinfo's ``fold=0`` maps it; a local time that happens
twice (fall-back) fires once, at its first occurrence.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["CronError", "CronSchedule", "parse_cron"]

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
MAX_EXPRESSION_CHARS = 200


class CronError(ValueError):
    """An expression that is not valid cron; the message names the field and the problem."""


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number from {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{name}: {number} is out of range ({low}-{high})")
    return number


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name}: empty list item in {text!r}")
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} must be a whole number above 0")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names)
            if end < start:
                raise CronError(f"{name}: range {body!r} ends before it starts")
        else:
            start = _value(body, name, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression; :meth:`fire_times` lists when it fires in a time zone."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: date) -> bool:
        """Whether the schedule fires on this (local) calendar day."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def _day_fires(self, day: date, zone: ZoneInfo) -> list[datetime]:
        fires = {
            datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            for hour in self.hours
            for minute in self.minutes
        }
        return sorted(fires)

    def fire_times(self, zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every fire time (UTC) in ``[start, end)``, ascending."""
        day = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date() + timedelta(days=1)
        previous: datetime | None = None
        while day <= last:
            if self.matches_day(day):
                for fire in self._day_fires(day, zone):
                    # A shifted gap time can equal a real one of the next hour: once only.
                    if start <= fire < end and fire != previous:
                        previous = fire
                        yield fire
            day += timedelta(days=1)

    def last_fire(self, zone: ZoneInfo, at: datetime, not_before: datetime) -> datetime | None:
        """The latest fire time at or before ``at`` and not before ``not_before``, or None."""
        day = at.astimezone(zone).date() + timedelta(days=1)
        first = not_before.astimezone(zone).date() - timedelta(days=1)
        while day >= first:
            if self.matches_day(day):
                fires = [f for f in self._day_fires(day, zone) if not_before <= f <= at]
                if fires:
                    return fires[-1]
            day -= timedelta(days=1)
        return None

    def next_fire(self, zone: ZoneInfo, after: datetime, not_after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` and at or before ``not_after``."""
        for fire in self.fire_times(zone, after + timedelta(microseconds=1), not_after):
            return fire
        return None


def _possible(schedule: CronSchedule) -> bool:
    if schedule.weekdays_restricted and schedule.days_restricted:
        return True
    # Some month must have one of the days (February counts its 29th: leap years exist).
    longest = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30}
    return any(d <= longest.get(m, 31) for m in schedule.months for d in schedule.days)


@functools.lru_cache(maxsize=1024)
def parse_cron(expression: str) -> CronSchedule:
    """Parse a five-field expression or a macro; raises :class:`CronError` saying why not.
    Cached: a schedule is immutable, and the gate reads the same few on every evaluation."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CronError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    text = _MACROS.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"{expression!r} has {len(parts)} fields; expected 5 (minute hour day-of-month "
            "month day-of-week, e.g. '0 18 * * fri') or a macro such as @daily"
        )
    parsed = [
        _field(part, name, low, high, names)
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in parsed[4])
    schedule = CronSchedule(
        expression=expression,
        minutes=parsed[0],
        hours=parsed[1],
        days=parsed[2],
        months=parsed[3],
        weekdays=weekdays,
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )
    if not _possible(schedule):
        raise CronError(f"{expression!r} never fires (no month has that day)")
    return schedule
