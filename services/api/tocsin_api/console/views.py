"""What the console's pages show, from what the api's resources answer (pure: no I/O).

The routes fetch with the api's own resource functions and hand the answers here; these
functions shape them for the templates and parse the console's forms, each error naming
its field.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from tocsin_common.config.model import Matcher

STATUSES = ("triggered", "acknowledged", "resolved")
URGENCIES = ("high", "low")
TEXT_MAX = 200


class FormProblem(ValueError):
    """A form or query field that is wrong: ``field`` and ``problem`` say which and why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class IncidentFilter:
    statuses: tuple[str, ...] = ()
    service_id: str = ""
    team_id: str = ""
    urgency: str = ""
    text: str = ""
    since_hours: int = 0  # created within the last N hours; 0: any time

    def query(self) -> list[tuple[str, str]]:
        """The filter as query parameters (the live list's links and the form's state)."""
        out = [("status", s) for s in self.statuses]
        for name, value in (
            ("service_id", self.service_id),
            ("team_id", self.team_id),
            ("urgency", self.urgency),
            ("q", self.text),
        ):
            if value:
                out.append((name, value))
        if self.since_hours:
            out.append(("since_hours", str(self.since_hours)))
        return out


def parse_filter(params: Mapping[str, Sequence[str]]) -> IncidentFilter:
    """The incident list's filter from its query; FormProblem naming a bad field."""
    statuses = tuple(params.get("status", ()))
    for s in statuses:
        if s not in STATUSES:
            raise FormProblem("status", f"{s!r} is not one of {', '.join(STATUSES)}")
    urgency = _one(params, "urgency")
    if urgency and urgency not in URGENCIES:
        raise FormProblem("urgency", f"{urgency!r} is not one of {', '.join(URGENCIES)}")
    text = _one(params, "q").strip()
    if len(text) > TEXT_MAX:
        raise FormProblem("q", f"at most {TEXT_MAX} characters")
    since_raw = _one(params, "since_hours")
    since_hours = 0
    if since_raw:
        if not since_raw.isdigit() or not 0 < int(since_raw) <= 24 * 90:
            raise FormProblem("since_hours", "a whole number of hours from 1 to 2160")
        since_hours = int(since_raw)
    return IncidentFilter(
        statuses=statuses,
        service_id=_one(params, "service_id"),
        team_id=_one(params, "team_id"),
        urgency=urgency,
        text=text,
        since_hours=since_hours,
    )


def _one(params: Mapping[str, Sequence[str]], name: str) -> str:
    values = params.get(name) or [""]
    return values[0].strip()


def matches_text(incident: Mapping[str, Any], text: str) -> bool:
    """Whether ``text`` (case-insensitive) is in the incident's title, id, service or
    one of its labels."""
    if not text:
        return True
    needle = text.casefold()
    labels = incident.get("labels") or {}
    haystack = [
        str(incident.get("title", "")),
        str(incident.get("id", "")),
        str(incident.get("service_id", "")),
        *(f"{k}={v}" for k, v in labels.items()),
    ]
    return any(needle in h.casefold() for h in haystack)


def status_counts(incidents: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counted = Counter(str(i.get("status", "")) for i in incidents)
    return {s: counted.get(s, 0) for s in STATUSES}


SORTS = {
    "newest": (lambda i: str(i.get("created_at") or ""), True),
    "oldest": (lambda i: str(i.get("created_at") or ""), False),
    "urgency": (lambda i: (i.get("urgency") != "high", str(i.get("created_at") or "")), False),
    "status": (lambda i: STATUSES.index(i["status"]) if i.get("status") in STATUSES else 9, False),
}


def sort_incidents(incidents: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort not in SORTS:
        raise FormProblem("sort", f"{sort!r} is not one of {', '.join(SORTS)}")
    key, reverse = SORTS[sort]
    return sorted(incidents, key=key, reverse=reverse)  # type: ignore[arg-type]


def when(value: str | None) -> str:
    """An RFC 3339 instant as people read it: ``2026-12-04 09:30 UTC``; "" for none."""
    if not value:
        return ""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- the schedule as a calendar --------------------------------------------------------------

SLOT = timedelta(minutes=15)
SLOTS_PER_DAY = 96  # the calendar's columns: quarter hours of a UTC day
PALETTE = 6  # colour classes p0..p5 (the CSP allows no inline style)


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _moment(at: datetime) -> str:
    return at.strftime("%a %-d %b %H:%M")


@dataclass(frozen=True)
class Block:
    """One shift as shown in one day of the calendar: ``first``..``last`` are the quarter
    hours of that day it covers (0..96), ``start``/``end`` the whole shift's."""

    who: str  # names, or "Gap: nobody on call"
    start: datetime
    end: datetime
    first: int
    last: int
    colour: int = 0  # p0..p5 by person; a gap has none
    gap: bool = False
    override: bool = False  # the final row: an override puts them on call
    override_id: str = ""  # the overrides row: which one
    from_config: bool = False

    @property
    def when(self) -> str:
        """From and to, as a screen reader reads them with the name: the whole shift."""
        end = _moment(self.end)
        if self.end.date() == self.start.date():
            end = self.end.strftime("%H:%M")
        return f"from {_moment(self.start)} to {end} UTC"

    @property
    def classes(self) -> str:
        kind = " gap" if self.gap else f" p{self.colour}"
        return f"blk s{self.first} e{self.last}{kind}{' ovr' if self.override else ''}"


@dataclass(frozen=True)
class CalendarRow:
    name: str
    kind: str  # "layer", "overrides" or "final"
    blocks: list[Block]


@dataclass(frozen=True)
class CalendarDay:
    day: datetime  # 00:00 UTC
    rows: list[CalendarRow]

    @property
    def iso(self) -> str:
        return self.day.date().isoformat()

    @property
    def title(self) -> str:
        return self.day.strftime("%A %-d %B %Y")


@dataclass(frozen=True)
class _Shift:
    start: datetime
    end: datetime
    users: tuple[str, ...]
    override_id: str = ""
    from_config: bool = False


def _shifts(spans: Iterable[Mapping[str, Any]], since: datetime, until: datetime) -> list[_Shift]:
    out = []
    for span in spans:
        start = _instant(span.get("start")) or since
        end = _instant(span.get("end")) or until
        if end > start:
            out.append(_Shift(start, end, tuple(span.get("user_ids") or ())))
    return out


def _clip(shift: _Shift, day: datetime) -> tuple[int, int] | None:
    """The quarter hours of ``day`` the shift covers (at least one), or None."""
    day_end = day + timedelta(days=1)
    if shift.end <= day or shift.start >= day_end:
        return None
    first = (max(shift.start, day) - day) // SLOT
    last = -((day - min(shift.end, day_end)) // SLOT)  # ceiling
    return first, max(last, first + 1)


def calendar(
    rendered: Mapping[str, Any], names: Mapping[str, str], since: datetime, until: datetime
) -> list[CalendarDay]:
    """The rendered schedule (the api's ``RenderedSchedule``) as days of rows: one per
    layer, the overrides, and the final schedule (its gaps marked, the shifts an override
    makes marked); each shift cut to the days it touches. Days are UTC, from ``since``."""
    layers = [
        (layer.get("name") or f"Layer {i}", _shifts(layer.get("spans") or (), since, until))
        for i, layer in enumerate(rendered.get("layers") or (), start=1)
    ]
    overrides = [
        _Shift(
            _instant(o.get("start")) or since,
            _instant(o.get("end")) or until,
            (str(o.get("user_id")),),
            str(o.get("id") or ""),
            bool(o.get("from_config")),
        )
        for o in rendered.get("overrides") or ()
    ]
    # The final schedule merges a person's adjacent shifts: cut them where an override
    # begins or ends, so that only what an override makes is marked as one.
    cuts = sorted({t for o in overrides for t in (o.start, o.end)})
    final = [
        _Shift(a, b, shift.users)
        for shift in _shifts(rendered.get("final_schedule") or (), since, until)
        for a, b in itertools.pairwise(
            [shift.start, *(t for t in cuts if shift.start < t < shift.end), shift.end]
        )
    ]
    # Colours follow people in order of appearance, the same in every row.
    seen: dict[str, int] = {}
    for shift in [s for _, spans in layers for s in spans] + overrides + final:
        for user in shift.users:
            seen.setdefault(user, len(seen) % PALETTE)

    def overridden(shift: _Shift) -> bool:
        return any(o.start <= shift.start < o.end and o.users[0] in shift.users for o in overrides)

    def blocks(shifts: Iterable[_Shift], day: datetime, final_row: bool = False) -> list[Block]:
        out = []
        for shift in shifts:
            cut = _clip(shift, day)
            if cut is None:
                continue
            who = ", ".join(names.get(u, u) for u in shift.users) or "Gap: nobody on call"
            out.append(
                Block(
                    who,
                    shift.start,
                    shift.end,
                    *cut,
                    colour=seen.get(shift.users[0], 0) if shift.users else 0,
                    gap=not shift.users,
                    override=final_row and bool(shift.users) and overridden(shift),
                    override_id=shift.override_id,
                    from_config=shift.from_config,
                )
            )
        return out

    days = []
    day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < until:
        rows = [CalendarRow(name, "layer", blocks(spans, day)) for name, spans in layers]
        rows.append(CalendarRow("Overrides", "overrides", blocks(overrides, day)))
        rows.append(CalendarRow("Final", "final", blocks(final, day, final_row=True)))
        days.append(CalendarDay(day, rows))
        day += timedelta(days=1)
    return days


def override_rows(rendered: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """The overrides of the range as a list to read and delete from."""
    out = []
    for o in rendered.get("overrides") or ():
        start, end = _instant(o.get("start")), _instant(o.get("end"))
        user = str(o.get("user_id"))
        out.append(
            {
                "id": o.get("id"),
                "who": names.get(user, user),
                "start": _moment(start) if start else "",
                "end": _moment(end) if end else "",
                "created_by": o.get("created_by") or "",
                "from_config": bool(o.get("from_config")),
            }
        )
    return out


def parse_instant(field_name: str, text: str) -> datetime:
    """A ``datetime-local`` input (``2026-12-04T09:30``, taken as UTC) or RFC 3339."""
    text = text.strip()
    if not text:
        raise FormProblem(field_name, "is required")
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormProblem(
            field_name, f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM)"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def parse_minutes(field_name: str, text: str, most: int) -> int:
    """A whole number of minutes from 1 to ``most``, as seconds."""
    text = text.strip()
    if not text.isdigit() or not 0 < int(text) <= most:
        raise FormProblem(field_name, f"a whole number of minutes from 1 to {most}")
    return int(text) * 60


def parse_matcher_lines(text: str) -> list[str]:
    """One matcher per line (blank lines skipped); at least one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise FormProblem("matchers", 'at least one matcher, e.g. alertname="DiskFull"')
    return lines


def schedule_range(since: str, days: str, now: datetime) -> tuple[datetime, datetime]:
    """The range a schedule page shows: from ``since`` (a date, default today) for
    ``days`` days (1..31, default 7)."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if since.strip():
        try:
            start = datetime.fromisoformat(since.strip()).replace(tzinfo=UTC)
        except ValueError:
            raise FormProblem("since", f"{since!r} is not a date (YYYY-MM-DD)") from None
    count = 7
    if days.strip():
        if not days.strip().isdigit() or not 0 < int(days) <= 31:
            raise FormProblem("days", "a whole number of days from 1 to 31")
        count = int(days)
    return start, start + timedelta(days=count)


@dataclass
class Flash:
    """A message for the next page (carried in the redirect's query, never markup)."""

    kind: str  # "ok" or "error"
    text: str
    extra: dict[str, str] = field(default_factory=dict)


def bulk_summary(action: str, results: Iterable[Mapping[str, Any]]) -> Flash:
    """One line for a bulk action's outcome: how many were accepted, and why others not."""
    results = list(results)
    done = [r for r in results if r.get("status") == 202]
    failed = [r for r in results if r.get("status") != 202]
    text = f"{action}: {len(done)} of {len(results)} accepted"
    if failed:
        reasons = "; ".join(f"{r.get('id')}: {r.get('detail') or r.get('status')}" for r in failed)
        return Flash("error", f"{text}. Not done: {reasons}")
    return Flash("ok", text)


def safe_url(url: str | None) -> str:
    """``url`` if it is an http(s) link, else "" (an alert's link may say anything:
    ``javascript:`` must never become a link)."""
    if not url:
        return ""
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    return url if scheme in ("http", "https") else ""


@dataclass(frozen=True)
class AsOf:
    """An incident as it was at an instant, rebuilt from its timeline: each entry carries
    the status the incident had once it was applied."""

    at: datetime
    status: str  # "" when the incident did not exist yet
    entries: list[Mapping[str, Any]]


def as_of(entries: Iterable[Mapping[str, Any]], at: datetime) -> AsOf:
    """The entries applied at or before ``at`` (the timeline is oldest first) and the
    status the last of them left."""
    seen: list[Mapping[str, Any]] = []
    for entry in entries:
        raw = entry.get("at")
        if not raw:
            continue
        when_applied = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        if when_applied > at:
            break
        seen.append(entry)
    status = str(seen[-1].get("incident_status", "")) if seen else ""
    return AsOf(at, status, seen)


@dataclass(frozen=True)
class Match:
    incident_id: str
    incident_title: str
    alert: str  # the alert's summary (or dedup key)


def preview_matches(
    matchers: Sequence[Matcher],
    service_id: str,
    alerts: Iterable[tuple[Mapping[str, Any], str, Mapping[str, str]]],
) -> list[Match]:
    """Which alerts a silence of ``matchers`` (of ``service_id``; "" every service) would
    mute now: ``alerts`` are (incident, the alert's summary, its label set as correlation
    matches it: tocsin_common.alert_labels)."""
    out = []
    for incident, summary, labels in alerts:
        if service_id and labels.get("service", "") != service_id:
            continue
        if all(m.matches(labels) for m in matchers):
            out.append(Match(str(incident.get("id", "")), str(incident.get("title", "")), summary))
    return out


RELATED_WINDOW = timedelta(hours=1)


def _created(incident: Mapping[str, Any]) -> datetime | None:
    raw = incident.get("created_at")
    if not raw:
        return None
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def recurring(
    incident: Mapping[str, Any], others: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Other incidents of the same service with the same title or group key: the same
    problem again (newest first, as listed)."""
    return [
        o
        for o in others
        if o.get("id") != incident.get("id")
        and o.get("service_id") == incident.get("service_id")
        and (
            o.get("title") == incident.get("title")
            or (incident.get("group_key") and o.get("group_key") == incident.get("group_key"))
        )
    ]


def related(
    incident: Mapping[str, Any],
    others: Iterable[Mapping[str, Any]],
    neighbours: Iterable[str],
    already: Iterable[Mapping[str, Any]] = (),
) -> list[Mapping[str, Any]]:
    """Other incidents of this service or of those it depends on or that depend on it
    (``neighbours``), opened within an hour of this one (recurring ones excepted)."""
    at = _created(incident)
    services = {incident.get("service_id"), *neighbours}
    skip = {o.get("id") for o in already} | {incident.get("id")}
    out = []
    for o in others:
        when_opened = _created(o)
        if o.get("id") in skip or o.get("service_id") not in services:
            continue
        if at is None or when_opened is None or abs(when_opened - at) > RELATED_WINDOW:
            continue
        out.append(o)
    return out


# ---------------------------------------------------------------------------------------------
# Insight (the KPI dashboard) and its CSV export
# ---------------------------------------------------------------------------------------------

PERIODS = ("day", "week", "month")
GROUPINGS = ("team", "service", "")  # "" : every incident the person may see, as one group
KPIS = (
    ("seconds_to_first_ack", "Time to acknowledge (MTTA)"),
    ("seconds_to_resolve", "Time to resolve (MTTR)"),
    ("seconds_to_engage", "Time to engage"),
)
STATS = ("count", "mean", "p50", "p90", "p95", "max")
RATES = (
    "escalation_rate",
    "auto_resolved_share",
    "alerts_per_incident",
    "suppressed_share",
    "total_notifications",
    "total_escalations",
    "total_reassignments",
    "total_snoozed_seconds",
)


@dataclass(frozen=True)
class InsightQuery:
    """The Insight page's filters, checked; ``since``/``until`` as typed (for the form)."""

    team_id: str = ""
    service_id: str = ""
    group: str = "team"
    period: str = ""
    since: str = ""
    until: str = ""
    time_zone: str = ""
    since_at: datetime | None = None
    until_at: datetime | None = None

    def query(self) -> list[tuple[str, str]]:
        """As query parameters: the CSV link carries the page's filters."""
        out = [("group", self.group)]
        for name in ("team_id", "service_id", "period", "since", "until", "time_zone"):
            value = getattr(self, name)
            if value:
                out.append((name, value))
        return out


def parse_insight_query(params: Mapping[str, Sequence[str]]) -> InsightQuery:
    """The Insight page's query; FormProblem naming a bad field."""
    values = {
        name: _one(params, name)[:TEXT_MAX]
        for name in ("team_id", "service_id", "period", "since", "until", "time_zone")
    }
    group = _one(params, "group") if "group" in params else "team"
    if group not in GROUPINGS:
        raise FormProblem("group", f"{group!r} is not one of team, service or (all)")
    if values["period"] and values["period"] not in PERIODS:
        raise FormProblem("period", f"{values['period']!r} is not one of {', '.join(PERIODS)}")
    since_at = parse_instant("since", values["since"]) if values["since"] else None
    until_at = parse_instant("until", values["until"]) if values["until"] else None
    if since_at is not None and until_at is not None and until_at <= since_at:
        raise FormProblem("until", "must be after since")
    return InsightQuery(group=group, since_at=since_at, until_at=until_at, **values)


def duration(seconds: float) -> str:
    """Seconds as people read them: ``45 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m} min {rest:02d} s" if rest else f"{m} min"
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h} h {rest // 60:02d} min"
    d, rest = divmod(s, 86400)
    return f"{d} d {rest // 3600} h"


def group_label(row: Mapping[str, Any], group: str, names: Mapping[str, str]) -> str:
    """A report row's group and period as a heading."""
    parts = []
    if group:
        key = f"{group}_id"
        value = str(row.get(key) or "")
        parts.append(names.get(value, value) or f"(no {group})")
    else:
        parts.append("All incidents")
    if row.get("period_start"):
        parts.append(f"from {when(row['period_start'])}")
    return " ".join(parts)


CHART_W = 320
CHART_BAR = 16
CHART_GAP = 6
CHART_LABEL = 40


def distribution_svg(distribution: Mapping[str, Any], title: str) -> str:
    """A distribution (p50, p90, p95, max) as an inline SVG bar chart of durations."""
    rows = [(name, float(distribution.get(name) or 0.0)) for name in ("p50", "p90", "p95", "max")]
    return bars_svg(rows, title, duration)


def bars_svg(
    rows: Sequence[tuple[str, float]],
    title: str,
    fmt: Callable[[float], str],
    label_width: int = CHART_LABEL,
) -> str:
    """Named values as an inline SVG bar chart, escaped markup.

    Bars are scaled to the largest; colours come from classes (``chart-<name>``: the CSP
    allows no inline style), and the chart is one image with its figures (``fmt``) in its
    accessible name.
    """
    scale = max((v for _, v in rows), default=0.0)
    label = f"{title}: " + ", ".join(f"{n} {fmt(v)}" for n, v in rows)
    height = len(rows) * (CHART_BAR + CHART_GAP)
    track = CHART_W - label_width
    out = [
        f'<svg class="chart" role="img" aria-label="{_attr(label)}" '
        f'viewBox="0 0 {CHART_W} {height}" width="{CHART_W}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_attr(label)}</title>",
    ]
    for i, (name, value) in enumerate(rows):
        y = i * (CHART_BAR + CHART_GAP)
        width = 0.0 if scale <= 0 else round(track * value / scale, 1)
        out.append(
            f'<text class="chart-label" x="0" y="{y + CHART_BAR - 4}">{_attr(name)}</text>'
            f'<rect class="chart-bar chart-{_attr(name)}" x="{label_width}" y="{y}" '
            f'width="{width}" height="{CHART_BAR}"/>'
        )
    out.append("</svg>")
    return "".join(out)


def _attr(text: str) -> str:
    return escape(text, quote=True)


def report_csv_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """The incident report as CSV rows (a header, then one row per group and period)."""
    groups = [f"{g}_id" if g != "urgency" and g != "priority" else g for g in report["group_by"]]
    header = [*groups, "period_start", "total_incident_count"]
    header += [f"{kpi}_{stat}" for kpi, _ in KPIS for stat in STATS]
    header += list(RATES)
    out = [header]
    for row in report["data"]:
        cells: list[str] = [_cell(row.get(g)) for g in groups]
        cells += [_cell(row.get("period_start")), str(row["total_incident_count"])]
        cells += [_number(row[kpi][stat]) for kpi, _ in KPIS for stat in STATS]
        cells += [_number(row[name]) for name in RATES]
        out.append(cells)
    return out


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{float(value):.3f}".rstrip("0").rstrip(".")


def _cell(value: Any) -> str:
    """Text in a CSV cell; a leading = + - @ is quoted so a spreadsheet doesn't run it."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def trend_text(series: Mapping[str, Any] | None) -> str:
    """insight's trend of a duration KPI (the last period against the one before) as a
    sentence; its verdict is "increase", "decrease", "no significant change" (the
    difference's confidence interval holds zero) or "insufficient data"."""
    trend = (series or {}).get("trend")
    if not trend or trend["summary"] == "insufficient data":
        return "Not enough data for a trend."
    change = f"{duration(trend['previous'])} → {duration(trend['current'])}"
    if not trend["significant"]:
        return f"No significant change ({change})."
    return f"{str(trend['summary']).capitalize()}: {change}."


@dataclass(frozen=True)
class Kpi:
    title: str
    count: int
    figures: tuple[tuple[str, str], ...]  # (mean, 2 min 05 s) ... readable
    chart: str  # inline SVG markup (escaped where it holds text)


@dataclass(frozen=True)
class InsightGroup:
    label: str
    total: int
    kpis: tuple[Kpi, ...]

    @classmethod
    def of(cls, row: Mapping[str, Any], group: str, names: Mapping[str, str]) -> InsightGroup:
        """A report row as the page shows it: its distributions readable, and charted."""
        label = group_label(row, group, names)
        kpis = []
        for key, title in KPIS:
            d = row[key]
            kpis.append(
                Kpi(
                    title,
                    int(d["count"]),
                    # No incident with a value: "—", not a misleading 0 s.
                    tuple((stat, duration(d[stat]) if d["count"] else "—") for stat in STATS[1:]),
                    distribution_svg(d, f"{title}, {label}"),
                )
            )
        return cls(label, int(row["total_incident_count"]), tuple(kpis))


HOUR_CLASSES = (
    ("business", "total_business_hour_interruptions"),
    ("off", "total_off_hour_interruptions"),
    ("sleep", "total_sleep_hour_interruptions"),
)


@dataclass(frozen=True)
class Interruptions:
    label: str
    total: int
    counts: tuple[tuple[str, int], ...]  # (business, 3), (off, 1), (sleep, 0)
    chart: str

    @classmethod
    def of(cls, row: Mapping[str, Any], names: Mapping[str, str]) -> Interruptions:
        """A person's interruptions from the overview, by hour class, charted."""
        who = str(row["user_id"])
        label = names.get(who, who) or "(nobody)"
        counts = tuple((hours, int(row[key])) for hours, key in HOUR_CLASSES)
        chart = bars_svg(
            [(h, float(n)) for h, n in counts],
            f"Interruptions of {label}",
            lambda v: f"{v:.0f}",
            label_width=64,
        )
        return cls(label, int(row["total_interruptions"]), counts, chart)


def percent(ratio: float, digits: int = 1) -> str:
    """A 0..1 ratio as a percentage: ``99.95 %`` (up to ``digits`` decimals, no trailing 0)."""
    text = f"{ratio * 100:.{digits}f}".rstrip("0").rstrip(".")
    return f"{text} %"


def public_updates(entries: Any) -> list[dict[str, Any]]:
    """The incident's status updates for the public, oldest first (none when its timeline
    could not be read)."""
    if not isinstance(entries, dict):
        return []
    return [e["status_update"] for e in entries["log_entries"] if e.get("status_update")]


def decision_flash(rule_id: str, approvals: Iterable[Mapping[str, Any]]) -> Flash:
    """What the console says after a decision on an automation rule's waiting actions."""
    states = [str(a.get("state", "")) for a in approvals]
    if states and all(s == "approved" for s in states):
        return Flash("ok", f"automation {rule_id}: approved; it runs now")
    if states and all(s == "rejected" for s in states):
        return Flash("ok", f"automation {rule_id}: rejected; it will not run")
    return Flash("ok", f"automation {rule_id}: {', '.join(states) or 'nothing decided'}")


def approval_rows(approvals: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The api's approvals with their times as the ``when`` filter reads them (ISO text)."""
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in a.items()}
        for a in approvals
    ]
