"""What the console's pages show, from what the api's resources answer (pure: no I/O).

The routes fetch with the api's own resource functions and hand the answers here; these
functions shape them for the templates and parse the console's forms, each error naming
its field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


@dataclass(frozen=True)
class Span:
    start: str
    end: str
    people: str  # names, or "" for a gap
    gap: bool


def schedule_spans(final: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> list[Span]:
    """The rendered final schedule as rows; an empty ``user_ids`` is a coverage gap."""
    out = []
    for span in final:
        ids = list(span.get("user_ids") or [])
        out.append(
            Span(
                when(span.get("start")),
                when(span.get("end")) or "open",
                ", ".join(names.get(i, i) for i in ids),
                not ids,
            )
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
