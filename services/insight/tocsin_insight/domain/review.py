"""Post-incident review draft: Markdown from an incident's timeline (docs/insight.md#review-draft).

Deterministic: the same input gives byte-for-byte the same text (every list is sorted with a
full tie-break, times are shown in one zone, nothing reads the clock), so a draft can be
regenerated and diffed. The draft states facts only - what the timeline shows, the
durations, the SLA outcome - and leaves headed gaps for what people must write (impact,
causes, action items). Text that came from people or monitoring tools (titles, summaries,
notes) is escaped, so it cannot break the tables or inject HTML.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from .measures import Engagement, IncidentTimes, measure
from .sla import ClockOutcome, SlaOutcome

__all__ = [
    "ReviewAlert",
    "ReviewChange",
    "ReviewEvent",
    "ReviewInput",
    "ReviewNote",
    "ReviewNotification",
    "format_seconds",
    "review_draft",
]


@dataclass(frozen=True)
class ReviewEvent:
    """A timeline entry: ``kind`` is the event type in lowercase (``triggered``,
    ``acknowledged``, ``escalated``, ``reassigned``, ``snoozed``, ``resolved``...)."""

    at: datetime
    kind: str
    actor: str
    message: str = ""


@dataclass(frozen=True)
class ReviewAlert:
    """An alert that joined the incident (``suppressed_reason`` set if it did not page)."""

    at: datetime
    summary: str
    source: str = ""
    severity: str = ""
    dedup_key: str = ""
    suppressed_reason: str = ""


@dataclass(frozen=True)
class ReviewNotification:
    """A page to ``person`` on ``channel`` and its outcome (``sent``, ``delivered``,
    ``failed: <reason>``...)."""

    at: datetime
    person: str
    channel: str
    outcome: str


@dataclass(frozen=True)
class ReviewNote:
    at: datetime
    author: str
    text: str


@dataclass(frozen=True)
class ReviewChange:
    """A change linked to the incident (a probable cause), with why it was linked."""

    at: datetime
    change_id: str
    service: str
    summary: str
    reason: str = ""


@dataclass(frozen=True)
class ReviewInput:
    """Everything the draft shows about one incident."""

    incident_id: str
    title: str
    service: str
    created: datetime
    team: str = ""
    status: str = "resolved"
    priority: str | None = None
    urgency: str = ""
    severity: str = ""
    resolved: datetime | None = None
    resolved_by: str = ""
    auto_resolved: bool = False
    acknowledgements: tuple[Engagement, ...] = ()
    highest_level: int = 1
    events: tuple[ReviewEvent, ...] = ()
    alerts: tuple[ReviewAlert, ...] = ()
    notifications: tuple[ReviewNotification, ...] = ()
    notes: tuple[ReviewNote, ...] = ()
    changes: tuple[ReviewChange, ...] = ()
    sla: SlaOutcome | None = None
    time_zone: str = "UTC"


_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "*": "\\*",
        "_": "\\_",
        "`": "\\`",
        "[": "\\[",
        "]": "\\]",
        "<": "&lt;",
        ">": "&gt;",
        "\r": " ",
        "\n": " ",
    }
)


def _text(value: str) -> str:
    """User or tool text, safe in a table cell or a sentence."""
    return value.translate(_ESCAPES).strip()


def _code(value: str) -> str:
    """An identifier as a code span (no escapes inside one; backticks and breaks dropped)."""
    cleaned = " ".join(value.replace("`", "").split())
    return f"`{cleaned}`" if cleaned else "-"


def format_seconds(seconds: float | None) -> str:
    """``3725`` -> ``1h 2m 5s``; whole seconds, largest units first; None -> ``-``."""
    if seconds is None:
        return "-"
    total = int(seconds)
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + (" ".join(parts) or "0s")


class _Draft:
    def __init__(self, review: ReviewInput) -> None:
        self.r = review
        self.zone = ZoneInfo(review.time_zone)
        self.lines: list[str] = []

    def when(self, at: datetime) -> str:
        return at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
        head = list(header)
        self.add("| " + " | ".join(head) + " |", "|" + "---|" * len(head))
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add("")


def review_draft(review: ReviewInput) -> str:
    """The Markdown review draft of one incident."""
    r = review
    d = _Draft(r)
    m = measure(
        IncidentTimes(
            r.incident_id,
            r.created,
            resolved=r.resolved,
            acknowledgements=r.acknowledgements,
            highest_level=r.highest_level,
        )
    )
    acks = sorted(r.acknowledgements, key=lambda a: (a.at, a.person))
    d.add(f"# Post-incident review: {_text(r.title)}", "")
    d.add(
        f"_Draft generated from the timeline of incident {_code(r.incident_id)}. The facts below "
        "come from Tocsin; the sections marked (to write) need the people involved._",
        "",
    )

    d.add("## Summary", "")
    service = _text(r.service) + (f" (team {_text(r.team)})" if r.team else "")
    classes = [f"priority {_text(r.priority)}" if r.priority else "no priority"]
    if r.urgency:
        classes.append(f"urgency {_text(r.urgency)}")
    if r.severity:
        classes.append(f"severity {_text(r.severity)}")
    if acks:
        first_ack = (
            f"{d.when(acks[0].at)} by {_text(acks[0].person)}, "
            f"{format_seconds(m.seconds_to_first_ack)} after it opened"
        )
    else:
        first_ack = "never"
    if r.resolved is not None:
        who = "automatically" if r.auto_resolved else f"by {_text(r.resolved_by) or 'unknown'}"
        resolved = (
            f"{d.when(r.resolved)} {who}, {format_seconds(m.seconds_to_resolve)} after it opened"
        )
    else:
        resolved = "not yet"
    suppressed = sum(1 for a in r.alerts if a.suppressed_reason)
    paged = sorted({n.person for n in r.notifications})
    d.table(
        ["fact", "value"],
        [
            ["Incident", _code(r.incident_id)],
            ["Service", service],
            ["Classification", ", ".join(classes)],
            ["Status", _text(r.status)],
            ["Opened", d.when(r.created)],
            ["First acknowledged", first_ack],
            ["Resolved", resolved],
            ["Highest escalation level", str(r.highest_level)],
            ["Alerts", f"{len(r.alerts)} ({suppressed} suppressed)"],
            [
                "People paged",
                (", ".join(_text(p) for p in paged) or "nobody")
                + f" ({len(r.notifications)} notifications)",
            ],
        ],
    )

    d.add("## Durations", "")
    d.table(
        ["measure", "value"],
        [
            [
                "Time to first acknowledgement (seconds_to_first_ack)",
                format_seconds(m.seconds_to_first_ack),
            ],
            ["Time to resolve (seconds_to_resolve)", format_seconds(m.seconds_to_resolve)],
            ["First to last responder (seconds_to_engage)", format_seconds(m.seconds_to_engage)],
            [
                "Opening to last responder (seconds_to_mobilize)",
                format_seconds(m.seconds_to_mobilize),
            ],
            ["Responders engaged", str(m.engaged_user_count)],
            ["Responder time, summed (engaged_seconds)", format_seconds(m.engaged_seconds)],
        ],
    )

    d.add("## SLA", "")
    if r.sla is None:
        d.add("No SLA policy applies to this incident's priority.", "")
    else:
        d.add(
            f"Priority {_text(r.sla.priority)}, counted on calendar {_code(r.sla.calendar_id)}.", ""
        )
        rows = [
            _sla_row(d, name, clock)
            for name, clock in (("Acknowledge", r.sla.ack), ("Resolve", r.sla.resolve))
            if clock is not None
        ]
        d.table(["clock", "target", "elapsed", "deadline", "outcome"], rows)

    d.add("## Timeline", "")
    entries: list[tuple[datetime, int, str, str, str]] = []
    for c in r.changes:
        entries.append(
            (c.at, 0, "change", _text(c.service), f"{_text(c.summary)} ({_code(c.change_id)})")
        )
    for a in r.alerts:
        what = _text(a.summary) + (
            f" (suppressed: {_text(a.suppressed_reason)})" if a.suppressed_reason else ""
        )
        entries.append((a.at, 1, "alert", _text(a.source), what))
    for e in r.events:
        entries.append((e.at, 2, _text(e.kind), _text(e.actor), _text(e.message)))
    for n in r.notifications:
        entries.append(
            (n.at, 3, "page", _text(n.person), f"{_text(n.channel)}: {_text(n.outcome)}")
        )
    for note in r.notes:
        entries.append((note.at, 4, "note", _text(note.author), _text(note.text)))
    entries.sort()
    d.table(
        ["time", "offset", "kind", "who", "what"],
        (
            [d.when(at), _offset(at, r.created), kind, who, what]
            for at, _, kind, who, what in entries
        ),
    )

    d.add("## Linked changes", "")
    if r.changes:
        d.table(
            ["time", "service", "change", "why linked"],
            (
                [
                    d.when(c.at),
                    _text(c.service),
                    f"{_text(c.summary)} ({_code(c.change_id)})",
                    _text(c.reason),
                ]
                for c in sorted(r.changes, key=lambda c: (c.at, c.change_id))
            ),
        )
    else:
        d.add("No change was linked to this incident.", "")

    d.add("## Notes", "")
    if r.notes:
        for note in sorted(r.notes, key=lambda n: (n.at, n.author, n.text)):
            d.add(f"**{_text(note.author)}**, {d.when(note.at)}:", "")
            for line in note.text.strip().splitlines() or [""]:
                d.add(f"> {_text(line)}".rstrip())
            d.add("")
    else:
        d.add("No notes were added.", "")

    for heading in (
        "Impact",
        "What happened",
        "Contributing factors",
        "What went well",
        "Action items",
    ):
        d.add(f"## {heading} (to write)", "")
    return "\n".join(d.lines).rstrip("\n") + "\n"


def _offset(at: datetime, created: datetime) -> str:
    seconds = (at - created).total_seconds()
    return ("T-" + format_seconds(-seconds)) if seconds < 0 else ("T+" + format_seconds(seconds))


def _sla_row(d: _Draft, name: str, clock: ClockOutcome) -> list[str]:
    if clock.status == "breached":
        outcome = f"breached by {format_seconds(clock.breached_by_seconds)}"
    else:
        outcome = clock.status
    return [
        name,
        format_seconds(clock.target_seconds),
        format_seconds(clock.elapsed_seconds),
        d.when(clock.deadline),
        outcome,
    ]
