"""Schedules rendered (pure): who is on call at a moment, and the final schedule for a range.

Everything is computed as intervals of real time (UTC instants), derived from wall-clock
definitions in the schedule's zone:

- A layer's handoff ``k`` is at ``start + k turns``. Daily and weekly turns are counted in
  local calendar days (a 09:00 handoff stays at 09:00 across DST); hourly and custom turns
  are fixed lengths of elapsed time. A local time that does not exist (in the spring-forward
  gap) or exists twice (autumn) is read the way :mod:`zoneinfo` reads ``fold=0``: the
  offset before the change.
- A restriction is a set of local windows (daily ``start``-``end``, weekly ``start_day
  start``-``end_day end``; an end at or before the start wraps past midnight or the end of
  the week). A restricted layer covers only inside its windows.
- Later layers win over earlier ones where they cover; overrides (from the file and the
  runtime ones from Redis) win over all layers. A time nobody covers is a coverage gap.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from tocsin_common.config import Layer, Restriction, Schedule, TocsinConfig

__all__ = [
    "OverrideSpan",
    "RangeTooLong",
    "Span",
    "coverage_gaps",
    "handoff",
    "ical",
    "layer_users",
    "overrides_in",
    "render",
    "render_layers",
    "resolve_targets",
    "turn_index",
    "who_is_on_call",
]

_CALENDAR_DAYS = {"daily": 1, "weekly": 7}
_WEEKDAY = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
# A render touching more boundaries than this is refused (a 1-second custom turn over a
# year would otherwise build millions of spans).
MAX_BOUNDARIES = 50_000


class RangeTooLong(ValueError):
    """The requested range has too many handoffs to render."""


@dataclass(frozen=True)
class OverrideSpan:
    """``user_id`` is on call from ``start`` to ``end`` (half-open), over all layers."""

    user_id: str
    start: datetime
    end: datetime
    override_id: str = ""
    created_by: str = ""  # the principal that created a runtime override

    def active_at(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class Span:
    """Part of the final schedule: ``user_ids`` on call from ``start`` to ``end``.
    No users means a coverage gap."""

    start: datetime
    end: datetime
    user_ids: tuple[str, ...]

    @property
    def is_gap(self) -> bool:
        return not self.user_ids


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall-clock time in ``zone`` (fold=0 for gaps and repeats)."""
    return local.replace(tzinfo=zone).astimezone(UTC)


def handoff(layer: Layer, zone: ZoneInfo, k: int) -> datetime:
    """The instant turn ``k`` of the layer begins (turn 0 at the layer's start)."""
    days = _CALENDAR_DAYS.get(layer.rotation) if layer.turn_length is None else None
    if days is not None:
        return _instant(layer.start + timedelta(days=days * k), zone)
    return _instant(layer.start, zone) + layer.turn * k


def turn_index(layer: Layer, schedule: Schedule, at: datetime) -> int:
    """The turn under way at ``at`` (negative before the layer's start)."""
    zone = schedule.zone
    at = at.astimezone(UTC)
    days = _CALENDAR_DAYS.get(layer.rotation) if layer.turn_length is None else None
    if days is None:
        return (at - _instant(layer.start, zone)) // layer.turn
    # Estimate by wall clock, then settle on real instants so the index never goes back
    # when the clock does (autumn).
    local = at.astimezone(zone).replace(tzinfo=None)
    k = (local - layer.start) // timedelta(days=days)
    while handoff(layer, zone, k + 1) <= at:
        k += 1
    while handoff(layer, zone, k) > at:
        k -= 1
    return k


def _rotation_users(layer: Layer, index: int) -> list[str]:
    users: list[str] = []
    count = len(layer.users)
    k = 0
    # Consecutive users of the rotation; a user listed twice counts once at a time.
    while len(users) < layer.on_call_at_once and k < count:
        user = layer.users[(index + k) % count]
        if user not in users:
            users.append(user)
        k += 1
    return users


def _restriction_windows(
    restriction: Restriction, zone: ZoneInfo, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The instants a restriction covers, for every window touching [since, until)."""
    first = since.astimezone(zone).date() - timedelta(days=8)
    last = until.astimezone(zone).date() + timedelta(days=1)
    windows: list[tuple[datetime, datetime]] = []
    day: date = first
    while day <= last:
        start_local = datetime.combine(day, restriction.start)
        if restriction.type == "daily":
            end_local = datetime.combine(day, restriction.end)
            if restriction.end <= restriction.start:
                end_local += timedelta(days=1)
        else:
            assert restriction.start_day is not None and restriction.end_day is not None
            if day.weekday() != _WEEKDAY[restriction.start_day]:
                day += timedelta(days=1)
                continue
            span_days = (_WEEKDAY[restriction.end_day] - _WEEKDAY[restriction.start_day]) % 7
            end_local = datetime.combine(day + timedelta(days=span_days), restriction.end)
            if end_local <= start_local:
                end_local += timedelta(days=7)
        start, end = _instant(start_local, zone), _instant(end_local, zone)
        if end > since and start < until and end > start:
            windows.append((start, end))
        day += timedelta(days=1)
    return windows


class _LayerView:
    """One layer with its restriction windows over a range, ready for point queries."""

    def __init__(self, layer: Layer, schedule: Schedule, since: datetime, until: datetime):
        self.layer = layer
        self.schedule = schedule
        self.zone = schedule.zone
        self.start = handoff(layer, self.zone, 0)
        self.windows = [
            w for r in layer.restrictions for w in _restriction_windows(r, self.zone, since, until)
        ]

    def covers(self, at: datetime) -> bool:
        if at < self.start:
            return False
        return not self.layer.restrictions or any(s <= at < e for s, e in self.windows)

    def users_at(self, at: datetime) -> list[str]:
        if not self.covers(at):
            return []
        return _rotation_users(self.layer, turn_index(self.layer, self.schedule, at))

    def boundaries(self, since: datetime, until: datetime) -> list[datetime]:
        points = [self.start]
        for s, e in self.windows:
            points += [s, e]
        first = max(turn_index(self.layer, self.schedule, since), 0)
        last = turn_index(self.layer, self.schedule, until) + 1
        if last - first > MAX_BOUNDARIES:
            raise RangeTooLong(
                f"the range spans {last - first} turns of layer "
                f"{self.layer.name or '#'}; ask for a shorter range"
            )
        points += [handoff(self.layer, self.zone, k) for k in range(first, last + 1)]
        return points


class _ScheduleView:
    def __init__(
        self,
        schedule: Schedule,
        since: datetime,
        until: datetime,
        runtime_overrides: Iterable[OverrideSpan] = (),
    ) -> None:
        self.layers = [_LayerView(layer, schedule, since, until) for layer in schedule.layers]
        self.overrides = [
            OverrideSpan(o.user, o.start.astimezone(UTC), o.end.astimezone(UTC))
            for o in schedule.overrides
        ] + [
            OverrideSpan(o.user_id, o.start.astimezone(UTC), o.end.astimezone(UTC), o.override_id)
            for o in runtime_overrides
        ]

    def users_at(self, at: datetime) -> list[str]:
        overriding = sorted({o.user_id for o in self.overrides if o.active_at(at)})
        if overriding:
            return overriding
        for layer in reversed(self.layers):
            users = layer.users_at(at)
            if users:
                return users
        return []


def layer_users(layer: Layer, schedule: Schedule, at: datetime) -> list[str]:
    """Who a layer puts on call at ``at`` (empty before its start or outside restrictions)."""
    at = at.astimezone(UTC)
    return _LayerView(layer, schedule, at, at + timedelta(seconds=1)).users_at(at)


def who_is_on_call(
    schedule: Schedule, at: datetime, runtime_overrides: Iterable[OverrideSpan] = ()
) -> list[str]:
    """Who is on call in the final schedule at ``at``: overrides, else the last layer that
    covers ``at``; empty in a coverage gap."""
    at = at.astimezone(UTC)
    view = _ScheduleView(schedule, at, at + timedelta(seconds=1), runtime_overrides)
    return view.users_at(at)


def _zone_changes(zone: ZoneInfo, since: datetime, until: datetime) -> list[datetime]:
    """Instants in [since, until) at which the zone's UTC offset changes (DST), to the second."""
    changes: list[datetime] = []
    step = timedelta(hours=6)
    at = since
    while at < until:
        nxt = min(at + step, until)
        if at.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = at, nxt
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            changes.append(hi.replace(microsecond=0))
        at = nxt
    return changes


def render(
    schedule: Schedule,
    since: datetime,
    until: datetime,
    runtime_overrides: Iterable[OverrideSpan] = (),
) -> list[Span]:
    """The final schedule over [since, until) as consecutive spans; a span with no users is
    a coverage gap. Adjacent spans always differ in who is on call."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        return []
    view = _ScheduleView(schedule, since, until, runtime_overrides)
    points = {since, until}
    for layer in view.layers:
        points.update(layer.boundaries(since, until))
    for o in view.overrides:
        points.update((o.start, o.end))
    points.update(_zone_changes(schedule.zone, since, until))
    ordered = sorted(p for p in points if since <= p <= until)
    if len(ordered) > MAX_BOUNDARIES:
        raise RangeTooLong(f"the range has {len(ordered)} boundaries; ask for a shorter range")
    spans: list[Span] = []
    for start, end in itertools.pairwise(ordered):
        users = tuple(view.users_at(start))
        if spans and spans[-1].user_ids == users and spans[-1].end == start:
            spans[-1] = Span(spans[-1].start, end, users)
        else:
            spans.append(Span(start, end, users))
    return spans


def render_layers(schedule: Schedule, since: datetime, until: datetime) -> list[list[Span]]:
    """Each layer rendered alone over [since, until), in the schedule's order: the spans in
    which it puts someone on call (none where it does not cover), adjacent spans differing
    in who. What the final schedule is made of, to be shown beside it."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        return [[] for _ in schedule.layers]
    zone_changes = _zone_changes(schedule.zone, since, until)
    out: list[list[Span]] = []
    for layer in schedule.layers:
        view = _LayerView(layer, schedule, since, until)
        points = {since, until, *zone_changes, *view.boundaries(since, until)}
        spans: list[Span] = []
        for start, end in itertools.pairwise(sorted(p for p in points if since <= p <= until)):
            users = tuple(view.users_at(start))
            if spans and spans[-1].user_ids == users and spans[-1].end == start:
                spans[-1] = Span(spans[-1].start, end, users)
            else:
                spans.append(Span(start, end, users))
        out.append([s for s in spans if s.user_ids])
    return out


def overrides_in(
    schedule: Schedule,
    since: datetime,
    until: datetime,
    runtime_overrides: Iterable[OverrideSpan] = (),
) -> list[tuple[OverrideSpan, bool]]:
    """The overrides touching [since, until), by start: each with whether it comes from the
    config file (id ``config:N``, its place there) rather than from the runtime store."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    found = [
        (OverrideSpan(o.user, o.start.astimezone(UTC), o.end.astimezone(UTC), f"config:{i}"), True)
        for i, o in enumerate(schedule.overrides)
    ] + [(o, False) for o in runtime_overrides]
    return sorted(
        ((o, fixed) for o, fixed in found if o.start < until and o.end > since),
        key=lambda pair: (pair[0].start.astimezone(UTC), pair[0].override_id),
    )


def coverage_gaps(spans: Sequence[Span]) -> list[Span]:
    """The spans nobody covers."""
    return [s for s in spans if s.is_gap]


def resolve_targets(
    config: TocsinConfig,
    targets: list[tuple[str, str]],
    at: datetime,
    runtime_overrides: dict[str, list[OverrideSpan]] | None = None,
) -> list[str]:
    """Users behind escalation targets (user, schedule, team), in order, without repeats."""
    users: list[str] = []
    overrides = runtime_overrides or {}
    for kind, ident in targets:
        if kind == "user":
            found = [ident]
        elif kind == "schedule":
            found = who_is_on_call(config.schedule(ident), at, overrides.get(ident, ()))
        else:
            found = list(config.team(ident).members)
        users.extend(u for u in found if u not in users)
    return users


# --- iCal (RFC 5545) --------------------------------------------------------------------------


def _ical_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _ical_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _fold(line: str) -> str:
    # Lines longer than 75 octets are folded: CRLF and one space, never inside a character.
    out: list[str] = []
    current = ""
    for char in line:
        limit = 75 if not out else 74
        if len((current + char).encode()) > limit:
            out.append(current)
            current = char
        else:
            current += char
    out.append(current)
    return "\r\n ".join(out)


def ical(
    schedule: Schedule,
    spans: Sequence[Span],
    generated_at: datetime,
    user_names: dict[str, str] | None = None,
) -> str:
    """The final schedule as an iCalendar (RFC 5545) document: one event per span, gaps
    included as "Coverage gap" events so they show up in a calendar too."""
    names = user_names or {}
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Tocsin//On-call schedule//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{_ical_text(schedule.name)}",
        f"X-WR-TIMEZONE:{schedule.time_zone}",
    ]
    stamp = _ical_time(generated_at)
    for span in spans:
        who = ", ".join(names.get(u, u) for u in span.user_ids)
        summary = f"On call: {who}" if span.user_ids else "Coverage gap"
        lines += [
            "BEGIN:VEVENT",
            f"UID:{schedule.id}-{_ical_time(span.start)}-{_ical_time(span.end)}@tocsin",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{_ical_time(span.start)}",
            f"DTEND:{_ical_time(span.end)}",
            f"SUMMARY:{_ical_text(summary)}",
            f"DESCRIPTION:{_ical_text(f'{schedule.name}: ' + (who or 'nobody on call'))}",
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)
