"""Who is on call in a schedule at a moment (pure).

Each layer rotates its users in turns starting at the layer's start, a wall-clock time in
the schedule's zone: daily and weekly turns hand off at the same local time every day or
week, across DST changes; hourly and custom turns are fixed lengths of elapsed time.
Later layers win over earlier ones; overrides win over all layers.

This covers rotations and overrides; restrictions and coverage-gap reporting come with
the full schedule renderer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tocsin_common.config import Layer, Schedule, TocsinConfig

_CALENDAR_TURNS = {"daily": 1, "weekly": 7}


def turn_index(layer: Layer, schedule: Schedule, at: datetime) -> int:
    """How many whole turns have passed since the layer's start (negative before it)."""
    zone = schedule.zone
    start_local = layer.start.replace(tzinfo=zone)
    if layer.rotation in _CALENDAR_TURNS and layer.turn_length is None:
        # Count in local wall-clock days so a 09:00 handoff stays at 09:00 across DST.
        local = at.astimezone(zone).replace(tzinfo=None)
        days = (local - layer.start) / timedelta(days=1)
        return int(days // _CALENDAR_TURNS[layer.rotation])
    # Elapsed real time: subtracting two datetimes of the same zone would compare wall
    # clocks and miscount across a DST change.
    elapsed = at.astimezone(UTC) - start_local.astimezone(UTC)
    return int(elapsed // layer.turn)


def layer_users(layer: Layer, schedule: Schedule, at: datetime) -> list[str]:
    index = turn_index(layer, schedule, at)
    if index < 0:
        return []
    count = len(layer.users)
    return [layer.users[(index + k) % count] for k in range(layer.on_call_at_once)]


def who_is_on_call(schedule: Schedule, at: datetime) -> list[str]:
    overriding = [o.user for o in schedule.overrides if o.start <= at < o.end]
    if overriding:
        return sorted(set(overriding))
    for layer in reversed(schedule.layers):
        users = layer_users(layer, schedule, at)
        if users:
            return users
    return []


def resolve_targets(
    config: TocsinConfig, targets: list[tuple[str, str]], at: datetime
) -> list[str]:
    """Users behind escalation targets (user, schedule, team), in order, without repeats."""
    users: list[str] = []
    for kind, ident in targets:
        if kind == "user":
            found = [ident]
        elif kind == "schedule":
            found = who_is_on_call(config.schedule(ident), at)
        else:
            found = list(config.team(ident).members)
        users.extend(u for u in found if u not in users)
    return users
