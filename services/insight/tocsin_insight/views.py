"""The answers computed in Python from fact rows, by the domain: SLA breaches and attainment
(business-time clocks), problems (recurrence), trends (bootstrap) and the review draft.
The rows come from the serving generation; the domain decides, this module only maps."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from tocsin_common.config import TocsinConfig

from tocsin_insight.domain.availability import Availability, ImpactSlice, availability
from tocsin_insight.domain.changes import (
    ChangeFailureReport,
    IncidentSpan,
    change_failures,
    changes_of,
)
from tocsin_insight.domain.interruptions import (
    InterruptionCounts,
    Notification,
    count_interruptions,
)
from tocsin_insight.domain.measures import Engagement, top_sources
from tocsin_insight.domain.recurrence import Problem, RecurrenceInput, find_problems, fingerprint_of
from tocsin_insight.domain.review import (
    ReviewAlert,
    ReviewChange,
    ReviewEvent,
    ReviewInput,
    ReviewNote,
    ReviewNotification,
    review_draft,
)
from tocsin_insight.domain.sla import (
    Attainment,
    Breach,
    ClockOutcome,
    SlaOutcome,
    SlaTargets,
    attainment,
    breaches,
    sla_outcome,
    sla_targets,
)
from tocsin_insight.domain.stats import Trend, compare_periods
from tocsin_insight.gate_state import CHANGE_COLUMNS, change_record_of
from tocsin_insight.reports import DURATIONS, Filter, Point, where_clause
from tocsin_insight.schema import generation_schema

Conn = psycopg.AsyncConnection[Any]

# The trend's bootstrap: seeded, so the same figures give the same interval.
TREND_SEED = 20260101
TREND_RESAMPLES = 1000


async def _rows(
    conn: Conn, generation: str, f: Filter, columns: list[str]
) -> list[tuple[Any, ...]]:
    where, params = where_clause(f)
    statement = sql.SQL(
        "SELECT {cols} FROM {s}.incident_facts WHERE {where} ORDER BY created_at, incident_id"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        s=generation_schema(generation),
        where=where,
    )
    cur = await conn.execute(statement, params)
    return [tuple(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class BreachRow:
    breach: Breach
    clock: ClockOutcome  # the breached clock: its target and elapsed business time
    incident: dict[str, Any]  # the incident's columns


@dataclass(frozen=True)
class BreachReport:
    breaches: list[BreachRow]  # worst first
    ack: Attainment
    resolve: Attainment


async def sla_breaches(
    conn: Conn, generation: str, f: Filter, config: TocsinConfig, now: datetime
) -> BreachReport:
    """Every SLA clock of the filtered incidents against their priority's targets."""
    columns = ["incident_id", "service_id", "team_id", "priority", "created_at",
               "first_ack_at", "resolved_at"]  # fmt: skip
    rows = await _rows(conn, generation, f, columns)
    targets: dict[tuple[str, str], SlaTargets | None] = {}
    outcomes: list[tuple[str, SlaOutcome]] = []
    by_id: dict[str, tuple[dict[str, Any], SlaOutcome]] = {}
    for row in rows:
        item = dict(zip(columns, row, strict=True))
        key = (item["priority"], item["team_id"])
        if key not in targets:
            targets[key] = sla_targets(
                config.insight, item["priority"] or None, item["team_id"] or None
            )
        target = targets[key]
        if target is None:
            continue
        outcome = sla_outcome(
            target, item["created_at"], item["first_ack_at"], item["resolved_at"], now
        )
        outcomes.append((item["incident_id"], outcome))
        by_id[item["incident_id"]] = (item, outcome)
    ack, resolve = attainment(o for _, o in outcomes)
    found: list[BreachRow] = []
    for breach in breaches(outcomes):
        item, outcome = by_id[breach.incident_id]
        clock = outcome.ack if breach.clock == "ack" else outcome.resolve
        assert clock is not None
        found.append(BreachRow(breach, clock, item))
    return BreachReport(found, ack, resolve)


async def problems(conn: Conn, generation: str, f: Filter, config: TocsinConfig) -> list[Problem]:
    """The problems among the filtered incidents, by the config's recurrence rule."""
    rows = await _rows(
        conn, generation, f, ["incident_id", "service_id", "group_key", "dedup_key", "created_at"]
    )
    rule = config.insight.recurrence
    return find_problems(
        (
            RecurrenceInput(incident_id, service, fingerprint_of(group_key, [dedup_key]), created)
            for incident_id, service, group_key, dedup_key, created in rows
        ),
        rule.min_incidents,
        rule.window,
    )


def trend(points: list[Point], metric: str) -> Trend | None:
    """The last period against the one before (None with fewer than two periods): the
    median for durations, the mean (a rate or a count per incident) otherwise."""
    if len(points) < 2:
        return None
    statistic = "p50" if metric in DURATIONS else "mean"
    return compare_periods(
        points[-1].samples,
        points[-2].samples,
        rng=random.Random(TREND_SEED),
        statistic=statistic,  # type: ignore[arg-type]
        resamples=TREND_RESAMPLES,
    )


async def review(
    conn: Conn, generation: str, incident_id: str, config: TocsinConfig, now: datetime
) -> tuple[str, str] | None:
    """(the incident's service, its review draft in Markdown), or None when unknown."""
    s = generation_schema(generation)
    cur = await conn.execute(
        sql.SQL(
            "SELECT service_id, team_id, title, status, priority, urgency, severity, created_at, "
            "resolved_at, resolved_by, auto_resolved, max_level, linked_changes, first_ack_at, "
            "first_ack_by FROM {s}.incident_facts WHERE incident_id = %s"
        ).format(s=s),
        (incident_id,),
    )
    fact = await cur.fetchone()
    if fact is None:
        return None
    (service, team, title, status, priority, urgency, severity, created, resolved,
     resolved_by, auto, max_level, linked, first_ack_at, first_ack_by) = fact  # fmt: skip
    cur = await conn.execute(
        sql.SQL(
            "SELECT at, type, actor, message, alert_summary FROM {s}.incident_events "
            "WHERE incident_id = %s ORDER BY at, event_id"
        ).format(s=s),
        (incident_id,),
    )
    events = await cur.fetchall()
    cur = await conn.execute(
        sql.SQL(
            "SELECT at, user_id, channel, outcome FROM {s}.notification_facts "
            "WHERE incident_id = %s ORDER BY at, request_id, attempt"
        ).format(s=s),
        (incident_id,),
    )
    pages = await cur.fetchall()
    cur = await conn.execute(
        sql.SQL(
            "SELECT at, event_id, service_id, summary FROM {s}.change_facts "
            "WHERE event_id = ANY(%s) ORDER BY at, event_id"
        ).format(s=s),
        (list(linked or ()),),
    )
    changes = await cur.fetchall()
    acks = tuple(
        Engagement(actor, at) for at, kind, actor, _, _ in events if kind == "acknowledged"
    )
    if not acks and first_ack_at is not None:
        acks = (Engagement(first_ack_by, first_ack_at),)
    target = sla_targets(config.insight, priority or None, team or None)
    outcome = (
        sla_outcome(target, created, first_ack_at, resolved, now) if target is not None else None
    )
    draft = ReviewInput(
        incident_id=incident_id,
        title=title,
        service=service,
        created=created,
        team=team,
        status=status,
        priority=priority or None,
        urgency=urgency,
        severity=severity,
        resolved=resolved,
        resolved_by=resolved_by,
        auto_resolved=auto,
        acknowledgements=acks,
        highest_level=max(1, max_level),
        events=tuple(
            ReviewEvent(at, kind, actor, message)
            for at, kind, actor, message, _ in events
            if kind != "note_added"
        ),
        alerts=tuple(
            ReviewAlert(at, summary)
            for at, kind, _, _, summary in events
            if kind in ("triggered", "alert_added", "suppressed", "held") and summary
        ),
        notifications=tuple(
            ReviewNotification(at, user, channel, outcome_name)
            for at, user, channel, outcome_name in pages
        ),
        notes=tuple(
            ReviewNote(at, actor, message)
            for at, kind, actor, message, _ in events
            if kind == "note_added"
        ),
        changes=tuple(
            ReviewChange(at, change_id, change_service, summary, "probable cause")
            for at, change_id, change_service, summary in changes
        ),
        sla=outcome,
        time_zone=config.insight.time_zone,
    )
    return service, review_draft(draft)


DEFAULT_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Overview:
    availability: list[Availability]
    change_failure: ChangeFailureReport
    interruptions: dict[str, InterruptionCounts]
    top_sources: list[tuple[str, int]]


def _window(f: Filter, now: datetime, default: timedelta) -> tuple[datetime, datetime]:
    end = f.until or now
    start = f.since or end - default
    return start, end


def _scoped(f: Filter, config: TocsinConfig) -> list[str]:
    """The services of the config a filter covers."""
    return [
        s.id
        for s in config.services
        if (not f.service_id or s.id == f.service_id) and (not f.team_id or s.team == f.team_id)
    ]


async def _impact_slices(
    conn: Conn, s: sql.Identifier, service: str, start: datetime, end: datetime
) -> list[ImpactSlice]:
    """The service's impact slices that overlap [start, end)."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT coalesce(impact_start, created_at), impact_end, impact "
            "FROM {s}.incident_facts WHERE service_id = %s AND impact <> '' "
            "AND coalesce(impact_start, created_at) < %s "
            "AND (impact_end IS NULL OR impact_end > %s)"
        ).format(s=s),
        (service, end, start),
    )
    return [
        ImpactSlice(service, begin, finish, level) for begin, finish, level in await cur.fetchall()
    ]


# availability() wants a target; uptime reads only the availability and up_time_pct.
_ANY_TARGET = 99.9


async def uptime(
    conn: Conn, generation: str, services: list[str], start: datetime, end: datetime
) -> list[Availability]:
    """Each service's availability over [start, end) from its incidents' impact (the
    status page's 90-day uptime); a service with no incident is 100 %."""
    s = generation_schema(generation)
    found = []
    for service in services:
        slices = await _impact_slices(conn, s, service, start, end)
        found.append(availability(service, slices, start, end, _ANY_TARGET))
    return found


async def overview(
    conn: Conn, generation: str, f: Filter, config: TocsinConfig, now: datetime, top: int
) -> Overview:
    s = generation_schema(generation)
    insight = config.insight
    # Availability: each SLO'd service of the filter over its window (or the filter's).
    found: list[Availability] = []
    for service in _scoped(f, config):
        slo = insight.slo(service)
        if slo is None:
            continue
        start, end = _window(f, now, slo.window)
        slices = await _impact_slices(conn, s, service, start, end)
        found.append(availability(service, slices, start, end, slo.availability_target))
    # Change failure: the filter's changes, against incidents on every service (dependents).
    rule = insight.change_failure
    start, end = _window(f, now, DEFAULT_WINDOW)
    scoped = set(_scoped(f, config)) if (f.service_id or f.team_id) else None
    # Every event from the window's start on (up to now): a change that began in the window
    # may end, be rolled back or be fixed forward after it; and the earlier events of those
    # changes, so one that began before the window is seen to (domain.changes.changes_of).
    cur = await conn.execute(
        sql.SQL(
            "SELECT {cols} FROM {s}.change_facts WHERE at >= %(start)s OR change_id IN "
            "(SELECT change_id FROM {s}.change_facts WHERE at >= %(start)s AND change_id <> '')"
        ).format(s=s, cols=sql.SQL(CHANGE_COLUMNS)),
        {"start": start},
    )
    records = [change_record_of(row) for row in await cur.fetchall()]
    changes = changes_of(
        (r for r in records if scoped is None or r.service_id in scoped), start, end
    )
    latest = max((c.ended or c.at for c in changes), default=end)
    cur = await conn.execute(
        sql.SQL(
            "SELECT incident_id, service_id, created_at, resolved_at FROM {s}.incident_facts "
            "WHERE created_at >= %s AND created_at < %s"
        ).format(s=s),
        (start, max(end, latest) + rule.window),
    )
    spans = [IncidentSpan(*row) for row in await cur.fetchall()]
    depends_on = {sv.id: list(sv.depends_on) for sv in config.services}
    failures = change_failures(
        changes, spans, rule.window, depends_on if rule.include_dependents else None
    )
    # Interruptions: pages delivered in the window for the filter's incidents.
    where, params = where_clause(replace(f, since=None, until=None))
    cur = await conn.execute(
        sql.SQL(
            "SELECT n.user_id, n.channel, n.at, n.incident_id FROM {s}.notification_facts n "
            "JOIN {s}.incident_facts f USING (incident_id) "
            "WHERE n.outcome = 'delivered' AND n.at >= %(w_start)s AND n.at < %(w_end)s "
            "AND {where}"
        ).format(s=s, where=where),
        {**params, "w_start": start, "w_end": end},
    )
    notes = [
        Notification(person, channel, at, incident)
        for person, channel, at, incident in await cur.fetchall()
    ]
    zones = {u.id: u.time_zone for u in config.users}
    counts = count_interruptions(
        notes, zones, insight.interruptions.channels, insight.interruptions.merge_window
    )
    # Noise: alerts per source of the filter's incidents in the window.
    where, params = where_clause(replace(f, since=start, until=end))
    cur = await conn.execute(
        sql.SQL(
            "SELECT source, sum(alert_count)::bigint FROM {s}.incident_facts f WHERE {where} "
            "GROUP BY source"
        ).format(s=s, where=where),
        params,
    )
    sources = top_sources(((src, int(n)) for src, n in await cur.fetchall() if src), top)
    return Overview(found, failures, counts, sources)
