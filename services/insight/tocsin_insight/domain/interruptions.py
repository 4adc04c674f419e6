"""Interruptions per person, classed by the hour in the person's own time zone, as PagerDuty
Analytics defines them (docs/insight.md#interruptions):

- **sleep hours**: 22:00-08:00, every day;
- **business hours**: 08:00-18:00, Monday to Friday;
- **off hours**: 18:00-22:00 Monday to Friday, and 08:00-22:00 on Saturday and Sunday.

PagerDuty lists "all day Sat-Sun" under off hours and "10pm-8am every day" under sleep hours;
the classes here do not overlap: a weekend night counts as sleep (the class that matters
most), never twice. An interruption is a notification on an interrupting channel (sms,
voice, chat push; never email); notifications to one person less than ``merge_window`` after
the first notification of a burst count as one interruption, classed by that first one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "HourClass",
    "Interruption",
    "InterruptionCounts",
    "Notification",
    "count_interruptions",
    "hour_class",
    "interruptions",
]

HourClass = Literal["business", "off", "sleep"]

_SLEEP_FROM, _SLEEP_UNTIL = 22, 8
_BUSINESS_UNTIL = 18


def hour_class(at: datetime, time_zone: str) -> HourClass:
    """The class of instant ``at`` for a person in ``time_zone`` (an IANA name)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at: {at.isoformat()} has no time zone; pass an aware datetime")
    local = at.astimezone(ZoneInfo(time_zone))
    if local.hour >= _SLEEP_FROM or local.hour < _SLEEP_UNTIL:
        return "sleep"
    if local.weekday() < 5 and local.hour < _BUSINESS_UNTIL:
        return "business"
    return "off"


@dataclass(frozen=True)
class Notification:
    """One notification sent to ``person`` on ``channel`` (a contact method type)."""

    person: str
    channel: str
    at: datetime
    incident_id: str = ""


@dataclass(frozen=True)
class Interruption:
    """One interruption of ``person``: a burst of ``notifications`` beginning ``at``."""

    person: str
    at: datetime
    hour_class: HourClass
    notifications: int
    incident_ids: tuple[str, ...]


@dataclass(frozen=True)
class InterruptionCounts:
    """PagerDuty's per-responder interruption fields, for one person."""

    total_notifications: int = 0
    total_interruptions: int = 0
    total_business_hour_interruptions: int = 0
    total_off_hour_interruptions: int = 0
    total_sleep_hour_interruptions: int = 0


def interruptions(
    notifications: Iterable[Notification],
    time_zones: Mapping[str, str],
    channels: Iterable[str] = ("sms", "voice", "slack", "teams"),
    merge_window: timedelta = timedelta(seconds=60),
    default_time_zone: str = "UTC",
) -> list[Interruption]:
    """The interruptions in ``notifications``, ordered by person then time. A person's zone
    is ``time_zones[person]``, else ``default_time_zone``."""
    interrupting = set(channels)
    by_person: dict[str, list[Notification]] = defaultdict(list)
    for note in notifications:
        if note.channel in interrupting:
            by_person[note.person].append(note)
    found: list[Interruption] = []
    for person in sorted(by_person):
        zone = time_zones.get(person, default_time_zone)
        burst: list[Notification] = []
        for note in sorted(by_person[person], key=lambda n: (n.at, n.incident_id, n.channel)):
            if burst and note.at - burst[0].at < merge_window:
                burst.append(note)
                continue
            if burst:
                found.append(_interruption(person, zone, burst))
            burst = [note]
        if burst:
            found.append(_interruption(person, zone, burst))
    return found


def _interruption(person: str, zone: str, burst: list[Notification]) -> Interruption:
    incidents = tuple(dict.fromkeys(n.incident_id for n in burst if n.incident_id))
    first = burst[0].at
    return Interruption(person, first, hour_class(first, zone), len(burst), incidents)


def count_interruptions(
    notifications: Iterable[Notification],
    time_zones: Mapping[str, str],
    channels: Iterable[str] = ("sms", "voice", "slack", "teams"),
    merge_window: timedelta = timedelta(seconds=60),
    default_time_zone: str = "UTC",
) -> dict[str, InterruptionCounts]:
    """Per person: notifications sent on any channel (``total_notifications``, email
    included, as PagerDuty counts it) and interruptions by hour class."""
    notes = list(notifications)
    sent: dict[str, int] = defaultdict(int)
    for note in notes:
        sent[note.person] += 1
    classes: dict[str, dict[HourClass, int]] = defaultdict(lambda: defaultdict(int))
    for item in interruptions(notes, time_zones, channels, merge_window, default_time_zone):
        classes[item.person][item.hour_class] += 1
    result: dict[str, InterruptionCounts] = {}
    for person in sorted(sent):
        by_class = classes.get(person, {})
        result[person] = InterruptionCounts(
            total_notifications=sent[person],
            total_interruptions=sum(by_class.values()),
            total_business_hour_interruptions=by_class.get("business", 0),
            total_off_hour_interruptions=by_class.get("off", 0),
            total_sleep_hour_interruptions=by_class.get("sleep", 0),
        )
    return result
