"""KPI queries over the serving generation's facts. Distributions are computed by
PostgreSQL (``percentile_cont``), so a report over many incidents moves only its rows.

The query is built from a validated :class:`ReportQuery` (pure: :func:`report_query` turns
the request's fields into one, naming the field of any bad value); values always travel as
parameters, identifiers through psycopg.sql.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from tocsin_insight import rollup
from tocsin_insight.domain.stats import percentile_cont
from tocsin_insight.schema import generation_schema

# Report dimension -> incident fact column.
DIMENSIONS = {
    "service": "service_id",
    "team": "team_id",
    "person": "first_ack_by",
    "urgency": "urgency",
    "priority": "priority",
}
PERIODS = ("day", "week", "month")
URGENCIES = ("high", "low")
DURATIONS = (
    "seconds_to_first_ack",
    "seconds_to_resolve",
    "seconds_to_engage",
    "seconds_to_mobilize",
)
RATES = ("incident_count", "escalation_rate", "auto_resolved_share", "alerts_per_incident")
METRICS = DURATIONS + RATES


_PRIORITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


class QueryError(ValueError):
    """A request field holds a value a report cannot use (the message names it)."""


@dataclass(frozen=True)
class Filter:
    team_id: str = ""
    service_id: str = ""
    urgency: str = ""
    priority: str = ""
    since: datetime | None = None
    until: datetime | None = None
    time_zone: str = "UTC"


@dataclass(frozen=True)
class ReportQuery:
    filter: Filter
    group_by: tuple[str, ...] = ()
    period: str = ""


@dataclass(frozen=True)
class DistributionRow:
    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    max: float


@dataclass(frozen=True)
class ReportRow:
    group: dict[str, str]
    period_start: datetime | None
    incidents: int
    seconds_to_first_ack: DistributionRow
    seconds_to_resolve: DistributionRow
    seconds_to_engage: DistributionRow
    seconds_to_mobilize: DistributionRow
    escalation_rate: float
    auto_resolved_share: float
    alerts_per_incident: float
    suppressed_share: float
    notifications: int
    escalations: int
    reassignments: int
    snoozed_seconds: float


@dataclass(frozen=True)
class Point:
    period_start: datetime
    value: float
    count: int
    samples: tuple[float, ...] = field(default=())


def make_filter(
    *,
    team_id: str = "",
    service_id: str = "",
    urgency: str = "",
    priority: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    time_zone: str = "",
) -> Filter:
    urgency = urgency.strip().lower()
    if urgency and urgency not in URGENCIES:
        raise QueryError(f"filter.urgency: {urgency!r} is not one of {', '.join(URGENCIES)}")
    priority = priority.strip()
    if priority and not _PRIORITY.match(priority):
        raise QueryError(
            f"filter.priority: {priority!r} is not a priority id (letters, digits, - and _)"
        )
    zone = time_zone.strip() or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"filter.time_zone: {zone!r} is not an IANA time zone") from None
    if since is not None and until is not None and until <= since:
        raise QueryError("filter.until: must be after filter.since")
    return Filter(team_id.strip(), service_id.strip(), urgency, priority, since, until, zone)


def report_query(filter: Filter, group_by: Sequence[str], period: str) -> ReportQuery:
    dims: list[str] = []
    for i, raw in enumerate(group_by):
        name = raw.strip().lower()
        if name not in DIMENSIONS:
            raise QueryError(f"group_by[{i}]: {raw!r} is not one of {', '.join(DIMENSIONS)}")
        if name in dims:
            raise QueryError(f"group_by[{i}]: {name!r} is given twice")
        dims.append(name)
    period = period.strip().lower()
    if period and period not in PERIODS:
        raise QueryError(f"period: {period!r} is not one of {', '.join(PERIODS)}")
    return ReportQuery(filter, tuple(dims), period)


def where_clause(f: Filter, *, times: bool = True) -> tuple[sql.Composable, dict[str, Any]]:
    """The filter's conditions (``times`` false: without since/until)."""
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for column, value in (
        ("team_id", f.team_id),
        ("service_id", f.service_id),
        ("urgency", f.urgency),
        ("priority", f.priority),
    ):
        if value:
            clauses.append(
                sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            )
            params[column] = value
    if f.since is not None and times:
        clauses.append(sql.SQL("created_at >= %(since)s"))
        params["since"] = f.since
    if f.until is not None and times:
        clauses.append(sql.SQL("created_at < %(until)s"))
        params["until"] = f.until
    if not clauses:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(clauses), params


def _period(period: str) -> sql.Composable:
    # The local calendar's period start, back as an instant.
    return sql.SQL("(date_trunc({p}, created_at AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s)").format(
        p=sql.Literal(period)
    )


def _distribution(column: str) -> sql.Composable:
    # The max is percentile_cont at 1.0: one aggregate fewer per row than max().
    c = sql.Identifier(column)
    return sql.SQL(
        "count({c}), avg({c}), "
        "percentile_cont(ARRAY[0.5, 0.9, 0.95, 1.0]) WITHIN GROUP (ORDER BY {c})"
    ).format(c=c)


# What a report reads of a fact besides its dimensions: only these travel through the sort.
_REPORT_COLUMNS = (
    *DURATIONS,
    "incident_id",
    "created_at",
    "max_level",
    "auto_resolved",
    "resolved_at",
    "alert_count",
    "suppressed_alerts",
    "escalation_count",
    "reassignments",
    "snoozed_seconds",
)


def build_report(generation: str, query: ReportQuery) -> tuple[sql.Composed, dict[str, Any]]:
    s = generation_schema(generation)
    where, params = where_clause(query.filter)
    params["tz"] = query.filter.time_zone
    keys: list[sql.Composable] = [
        sql.SQL("{} AS {}").format(sql.Identifier(DIMENSIONS[d]), sql.Identifier(f"g_{d}"))
        for d in query.group_by
    ]
    if query.period:
        keys.append(sql.SQL("{} AS period_start").format(_period(query.period)))
    else:
        keys.append(sql.SQL("NULL::timestamptz AS period_start"))
    group_positions = sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(keys)))
    statement = sql.SQL(
        """
        SELECT {keys},
               count(*),
               {ack}, {resolve}, {engage}, {mobilize},
               avg((max_level >= 2)::int)::float8,
               coalesce(avg(auto_resolved::int) FILTER (WHERE resolved_at IS NOT NULL), 0)::float8,
               (sum(alert_count)::float8 / count(*)),
               coalesce(sum(suppressed_alerts)::float8 / nullif(sum(alert_count), 0), 0),
               coalesce(sum(n.delivered), 0)::bigint,
               sum(escalation_count)::bigint,
               sum(reassignments)::bigint,
               sum(snoozed_seconds)::float8
        FROM (SELECT {needed} FROM {s}.incident_facts f WHERE {where}) f
        LEFT JOIN {s}.incident_notifications n USING (incident_id)
        GROUP BY {positions}
        ORDER BY {positions}
        """
    ).format(
        keys=sql.SQL(", ").join(keys),
        ack=_distribution("seconds_to_first_ack"),
        resolve=_distribution("seconds_to_resolve"),
        engage=_distribution("seconds_to_engage"),
        mobilize=_distribution("seconds_to_mobilize"),
        needed=sql.SQL(", ").join(
            sql.Identifier(c)
            for c in dict.fromkeys([*_REPORT_COLUMNS, *(DIMENSIONS[d] for d in query.group_by)])
        ),
        s=s,
        where=where,
        positions=group_positions,
    )
    return statement, params


def _dist(values: Sequence[Any]) -> DistributionRow:
    count, mean, percentiles = values
    p = percentiles or [None, None, None, None]
    return DistributionRow(
        int(count or 0),
        float(mean or 0.0),
        float(p[0] or 0.0),
        float(p[1] or 0.0),
        float(p[2] or 0.0),
        float(p[3] or 0.0),
    )


# --- Report: the rollup for whole UTC days, the facts for the rest --------------------------
#
# A UTC day is read from the rollup when it lies inside [since, until) and inside one period
# of the report (no local midnight starting a period falls inside it: in UTC, or in a zone a
# whole number of hours from it for weeks and months, that is every day but the partial ones
# at since and until, and the days in which a period starts in the report's zone); every
# other instant is read from the facts. Both parts give the same measures (rollup.aggregates:
# counts, exact sums, each duration's values), which Python merges per group and period.
# Percentiles are computed there with the definition percentile_cont uses (stats.py), means
# as the values' correctly rounded sum (math.fsum) over their count, so neither depends on
# how the incidents were split between the two.


@dataclass(frozen=True)
class ReportPlan:
    """What a report reads from where: ``days`` whole UTC days from the rollup (each with its
    period's start, None without a period), the facts created in ``ranges`` ([lo, hi),
    None: open)."""

    days: tuple[tuple[date, datetime | None], ...]
    ranges: tuple[tuple[datetime | None, datetime | None], ...]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def plan_ranges(
    f: Filter, days: Sequence[tuple[date, datetime | None]]
) -> tuple[tuple[datetime | None, datetime | None], ...]:
    """The instants of [since, until) outside the rollup's ``days`` (pure)."""
    covered: list[list[datetime]] = []
    for day, _ in sorted(days):
        start = _day_start(day)
        if covered and covered[-1][1] == start:
            covered[-1][1] = start + timedelta(days=1)
        else:
            covered.append([start, start + timedelta(days=1)])
    ranges: list[tuple[datetime | None, datetime | None]] = []
    lo: datetime | None = f.since
    for start, end in covered:
        if lo is None or lo < start:
            ranges.append((lo, start))
        lo = end
    if lo is None or f.until is None or lo < f.until:
        ranges.append((lo, f.until))
    return tuple(ranges)


async def plan_report(
    conn: psycopg.AsyncConnection[Any], generation: str, query: ReportQuery
) -> ReportPlan:
    """Which UTC days the rollup answers for ``query`` (decided by PostgreSQL, with the same
    period expression the facts are grouped by), and the ranges left to the facts."""
    s = generation_schema(generation)
    f = query.filter
    params: dict[str, Any] = {"tz": f.time_zone, "since": f.since, "until": f.until}
    start = sql.SQL("(d::timestamp AT TIME ZONE 'UTC')")
    end = sql.SQL("((d + 1)::timestamp AT TIME ZONE 'UTC')")
    conditions: list[sql.Composable] = [
        sql.SQL("(%(since)s::timestamptz IS NULL OR {start} >= %(since)s)").format(start=start),
        sql.SQL("(%(until)s::timestamptz IS NULL OR {end} <= %(until)s)").format(end=end),
    ]
    if query.period:
        conditions.append(
            sql.SQL("{a} = {b}").format(
                a=_period_of(query.period, start),
                b=_period_of(query.period, sql.SQL("({} - interval '1 microsecond')").format(end)),
            )
        )
        period = _period_of(query.period, start)
    else:
        period = sql.SQL("NULL::timestamptz")
    statement = sql.SQL(
        "SELECT d, {period} FROM (SELECT generate_series(min(day), max(day), interval '1 day')"
        "::date AS d FROM {s}.incident_rollup) days WHERE {conditions} ORDER BY d"
    ).format(period=period, s=s, conditions=sql.SQL(" AND ").join(conditions))
    cur = await conn.execute(statement, params)
    days = tuple((row[0], row[1]) for row in await cur.fetchall())
    return ReportPlan(days, plan_ranges(f, days))


def _period_of(period: str, at: sql.Composable) -> sql.Composable:
    return sql.SQL("(date_trunc({p}, {at} AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s)").format(
        p=sql.Literal(period), at=at
    )


def build_planned_report(
    generation: str, query: ReportQuery, plan: ReportPlan
) -> tuple[sql.Composed, dict[str, Any]]:
    """One statement: the plan's rollup days and its ranges of facts, each as rows of
    (group, period, measures)."""
    s = generation_schema(generation)
    # The ranges (in the plan) stand for since and until.
    where, params = where_clause(query.filter, times=False)
    params["tz"] = query.filter.time_zone
    params["days"] = [d for d, _ in plan.days]
    params["periods"] = [p for _, p in plan.days]
    params["lo"] = [lo for lo, _ in plan.ranges]
    params["hi"] = [hi for _, hi in plan.ranges]
    dims = [sql.Identifier(DIMENSIONS[d]) for d in query.group_by]
    measures = sql.SQL(", ").join(sql.Identifier(m) for m in rollup.MEASURES)
    groups = sql.SQL("").join(sql.SQL("{}, ").format(d) for d in dims)
    raw_period = _period(query.period) if query.period else sql.SQL("NULL::timestamptz")
    parts: list[sql.Composable] = []
    if plan.days:
        parts.append(
            sql.SQL(
                "SELECT {groups}p.period_start, {measures} FROM {s}.incident_rollup "
                "JOIN unnest(%(days)s::date[], %(periods)s::timestamptz[]) p(day, period_start) "
                "USING (day) WHERE {where}"
            ).format(groups=groups, measures=measures, s=s, where=where)
        )
    if plan.ranges:
        raw_groups = sql.SQL("").join(sql.SQL("f.{}, ").format(d) for d in dims)
        parts.append(
            sql.SQL(
                "SELECT {groups}{period}, {aggregates} "
                "FROM unnest(%(lo)s::timestamptz[], %(hi)s::timestamptz[]) r(lo, hi) "
                "JOIN (SELECT * FROM {s}.incident_facts WHERE {where}) f "
                "ON f.created_at >= coalesce(r.lo, '-infinity') "
                "AND f.created_at < coalesce(r.hi, 'infinity') "
                "LEFT JOIN {s}.incident_notifications n USING (incident_id) "
                "GROUP BY {positions}"
            ).format(
                groups=raw_groups,
                period=sql.SQL("{} AS period_start").format(raw_period),
                aggregates=rollup.aggregates(),
                s=s,
                where=where,
                positions=sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(dims) + 1)),
            )
        )
    if not parts:
        return sql.Composed([sql.SQL("SELECT 1 WHERE false")]), params
    return sql.Composed([sql.SQL(" UNION ALL ").join(parts)]), params


@dataclass
class _Group:
    incidents: int = 0
    escalated: int = 0
    resolved: int = 0
    auto_resolved: int = 0
    alerts: int = 0
    suppressed_alerts: int = 0
    notifications: int = 0
    escalations: int = 0
    reassignments: int = 0
    snoozed_seconds: Decimal = Decimal(0)
    durations: tuple[list[float], list[float], list[float], list[float]] = field(
        default_factory=lambda: ([], [], [], [])
    )


def distribution(values: list[float]) -> DistributionRow:
    """count, mean, p50, p90, p95, max of ``values`` (sorted ascending; zeros when empty)."""
    if not values:
        return DistributionRow(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return DistributionRow(
        len(values),
        math.fsum(values) / len(values),
        percentile_cont(values, 0.5),
        percentile_cont(values, 0.9),
        percentile_cont(values, 0.95),
        float(values[-1]),
    )


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    *values, period = key
    return (*(str(v or "") for v in values), period or _EPOCH)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def merge_rows(group_by: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[ReportRow]:
    """Report rows from parts (group values, period start, then rollup.MEASURES): the parts of
    one group and period summed, their values merged; in group then period order (pure)."""
    dimensions = len(group_by)
    groups: dict[tuple[Any, ...], _Group] = {}
    for row in rows:
        key = tuple(row[: dimensions + 1])
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group()
        m = row[dimensions + 1 :]
        g.incidents += m[0]
        g.escalated += m[1]
        g.resolved += m[2]
        g.auto_resolved += m[3]
        g.alerts += m[4]
        g.suppressed_alerts += m[5]
        g.notifications += m[6]
        g.escalations += m[7]
        g.reassignments += m[8]
        g.snoozed_seconds += m[9]
        for values, part in zip(g.durations, m[10:14], strict=True):
            values.extend(part)
    out: list[ReportRow] = []
    for key in sorted(groups, key=_sort_key):
        g = groups[key]
        for values in g.durations:
            values.sort()  # runs already sorted: a merge
        out.append(
            ReportRow(
                group={d: str(key[i] or "") for i, d in enumerate(group_by)},
                period_start=key[dimensions],
                incidents=g.incidents,
                seconds_to_first_ack=distribution(g.durations[0]),
                seconds_to_resolve=distribution(g.durations[1]),
                seconds_to_engage=distribution(g.durations[2]),
                seconds_to_mobilize=distribution(g.durations[3]),
                escalation_rate=g.escalated / g.incidents,
                auto_resolved_share=g.auto_resolved / g.resolved if g.resolved else 0.0,
                alerts_per_incident=g.alerts / g.incidents,
                suppressed_share=g.suppressed_alerts / g.alerts if g.alerts else 0.0,
                notifications=g.notifications,
                escalations=g.escalations,
                reassignments=g.reassignments,
                snoozed_seconds=float(g.snoozed_seconds),
            )
        )
    return out


async def report(
    conn: psycopg.AsyncConnection[Any],
    generation: str,
    query: ReportQuery,
    *,
    use_rollup: bool = True,
) -> list[ReportRow]:
    """The report's rows: whole UTC days from the rollup, the rest from the facts
    (``use_rollup`` false: everything from the facts, the reference the rollup is tested
    against)."""
    if use_rollup:
        plan = await plan_report(conn, generation, query)
    else:
        plan = ReportPlan((), ((query.filter.since, query.filter.until),))
    statement, params = build_planned_report(generation, query, plan)
    # Binary results: the arrays of durations arrive as doubles, not as text to parse.
    cur = await conn.execute(statement, params, binary=True)
    return merge_rows(query.group_by, await cur.fetchall())


async def report_in_sql(
    conn: psycopg.AsyncConnection[Any], generation: str, query: ReportQuery
) -> list[ReportRow]:
    """The report computed whole by PostgreSQL from the facts (percentile_cont, avg): how
    reports were computed before the rollup; kept to check the two agree."""
    statement, params = build_report(generation, query)
    cur = await conn.execute(statement, params)
    rows = await cur.fetchall()
    out: list[ReportRow] = []
    n = len(query.group_by)
    for row in rows:
        group = {d: str(row[i] or "") for i, d in enumerate(query.group_by)}
        rest = row[n:]
        out.append(
            ReportRow(
                group=group,
                period_start=rest[0],
                incidents=int(rest[1]),
                seconds_to_first_ack=_dist(rest[2:5]),
                seconds_to_resolve=_dist(rest[5:8]),
                seconds_to_engage=_dist(rest[8:11]),
                seconds_to_mobilize=_dist(rest[11:14]),
                escalation_rate=float(rest[14] or 0.0),
                auto_resolved_share=float(rest[15] or 0.0),
                alerts_per_incident=float(rest[16] or 0.0),
                suppressed_share=float(rest[17] or 0.0),
                notifications=int(rest[18]),
                escalations=int(rest[19]),
                reassignments=int(rest[20]),
                snoozed_seconds=float(rest[21] or 0.0),
            )
        )
    return out


def timeseries_value(metric: str) -> sql.Composable:
    if metric in DURATIONS:
        return sql.SQL("percentile_cont(0.5) WITHIN GROUP (ORDER BY {c})").format(
            c=sql.Identifier(metric)
        )
    return {
        "incident_count": sql.SQL("count(*)::float8"),
        "escalation_rate": sql.SQL("avg((max_level >= 2)::int)::float8"),
        "auto_resolved_share": sql.SQL(
            "coalesce(avg(auto_resolved::int) FILTER (WHERE resolved_at IS NOT NULL), 0)::float8"
        ),
        "alerts_per_incident": sql.SQL("sum(alert_count)::float8 / count(*)"),
    }[metric]


def check_metric(metric: str) -> str:
    name = metric.strip().lower()
    if name not in METRICS:
        raise QueryError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    return name


async def timeseries(
    conn: psycopg.AsyncConnection[Any], generation: str, f: Filter, metric: str, period: str
) -> list[Point]:
    """One value per period; with each, the period's samples (durations: the incidents'
    values; rates: one 0/1 or count per incident) for a trend's bootstrap."""
    s = generation_schema(generation)
    where, params = where_clause(f)
    params["tz"] = f.time_zone
    sample: sql.Composable
    if metric in DURATIONS:
        sample = sql.Identifier(metric)
    else:
        sample = {
            "incident_count": sql.SQL("1.0"),
            "escalation_rate": sql.SQL("(max_level >= 2)::int::float8"),
            "auto_resolved_share": sql.SQL("auto_resolved::int::float8"),
            "alerts_per_incident": sql.SQL("alert_count::float8"),
        }[metric]
    statement = sql.SQL(
        """
        SELECT {period} AS period_start, {value}, count({count_col}),
               array_agg({sample}) FILTER (WHERE {sample} IS NOT NULL)
        FROM {s}.incident_facts f WHERE {where}
        GROUP BY 1 ORDER BY 1
        """
    ).format(
        period=_period(period),
        value=timeseries_value(metric),
        count_col=sql.Identifier(metric) if metric in DURATIONS else sql.SQL("*"),
        sample=sample,
        s=s,
        where=where,
    )
    cur = await conn.execute(statement, params)
    return [
        Point(row[0], float(row[1] or 0.0), int(row[2]), tuple(float(x) for x in row[3] or ()))
        for row in await cur.fetchall()
    ]
