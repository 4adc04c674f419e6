"""Per-incident measures and their aggregates, named and defined as PagerDuty Analytics
names and defines them where it has the field (docs/insight.md#response).

Per incident (``IncidentMeasures``):

- ``seconds_to_first_ack``: creation -> first explicit acknowledgement (a reassign, resolve or
  escalation is not an acknowledgement); None if never acknowledged.
- ``seconds_to_resolve``: creation -> resolution; None while open.
- ``engaged_user_count``: distinct people who acknowledged.
- ``seconds_to_engage``: a measure of *people response time*: from the first person's
  engagement to the last person's; None with fewer than two engaged people.
- ``seconds_to_mobilize``: creation -> the last additional person's engagement; None with
  fewer than two engaged people.
- ``engaged_seconds``: summed over engaged people, from each one's first engagement to the
  resolution (snoozed time included, as PagerDuty counts it); None while open.
- ``escalated``: the incident reached escalation level 2 or higher (escalation rate).

Aggregates (``IncidentKpis``) keep PagerDuty's totals and replace its means by
distributions: ``seconds_to_first_ack.mean`` is PagerDuty's ``mean_seconds_to_first_ack``,
and p50/p90/p95/max say what a mean hides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from .stats import Distribution, summarize

__all__ = [
    "SUPPRESSION_REASONS",
    "Engagement",
    "IncidentKpis",
    "IncidentMeasures",
    "IncidentTimes",
    "incident_kpis",
    "measure",
    "top_sources",
]

# Why an alert was recorded without paging (correlation's suppressed_reason values).
SUPPRESSION_REASONS = ("silence", "maintenance", "inhibition", "dependency", "flapping")


@dataclass(frozen=True)
class Engagement:
    """``person`` acknowledged at ``at``."""

    person: str
    at: datetime


@dataclass(frozen=True)
class IncidentTimes:
    """What the measures need of one incident's facts."""

    incident_id: str
    created: datetime
    resolved: datetime | None = None
    acknowledgements: tuple[Engagement, ...] = ()
    highest_level: int = 1
    escalation_count: int = 0
    reassignment_count: int = 0
    auto_resolved: bool = False
    snoozed_seconds: float = 0.0
    alerts: int = 1
    suppressed_alerts: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass(frozen=True)
class IncidentMeasures:
    """The measures of one incident (see the module's docstring)."""

    incident_id: str
    seconds_to_first_ack: float | None
    seconds_to_resolve: float | None
    seconds_to_engage: float | None
    seconds_to_mobilize: float | None
    engaged_user_count: int
    engaged_seconds: float | None
    escalated: bool


def measure(times: IncidentTimes) -> IncidentMeasures:
    """The measures of one incident."""
    first_by_person: dict[str, datetime] = {}
    for ack in sorted(times.acknowledgements, key=lambda a: (a.at, a.person)):
        first_by_person.setdefault(ack.person, ack.at)
    engaged = sorted(first_by_person.values())
    first_ack = engaged[0] if engaged else None
    several = len(engaged) >= 2
    resolved = times.resolved
    return IncidentMeasures(
        incident_id=times.incident_id,
        seconds_to_first_ack=_seconds(times.created, first_ack),
        seconds_to_resolve=_seconds(times.created, resolved),
        seconds_to_engage=_seconds(engaged[0], engaged[-1]) if several else None,
        seconds_to_mobilize=_seconds(times.created, engaged[-1]) if several else None,
        engaged_user_count=len(engaged),
        engaged_seconds=(
            sum(max(0.0, (resolved - at).total_seconds()) for at in engaged)
            if resolved is not None
            else None
        ),
        escalated=times.highest_level >= 2,
    )


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


@dataclass(frozen=True)
class IncidentKpis:
    """KPIs of a group of incidents (one service, team, priority, period...)."""

    total_incident_count: int
    total_incidents_acknowledged: int
    total_incidents_auto_resolved: int
    total_incidents_reassigned: int
    total_escalation_count: int
    escalated_incidents: int
    escalation_rate: float | None
    auto_resolved_share: float | None
    total_engaged_seconds: float
    total_snoozed_seconds: float
    seconds_to_first_ack: Distribution
    seconds_to_resolve: Distribution
    seconds_to_engage: Distribution
    seconds_to_mobilize: Distribution
    total_alerts: int
    alerts_per_incident: float | None
    suppressed_alerts: int
    suppressed_share: float | None
    suppressed_by_reason: dict[str, int]


def incident_kpis(incidents: Iterable[IncidentTimes]) -> IncidentKpis:
    """The KPIs of ``incidents``. Rates are None for an empty group. ``auto_resolved_share``
    is over resolved incidents; the suppressed share is over all alerts."""
    items = list(incidents)
    measures = [measure(t) for t in items]
    count = len(items)
    resolved = sum(1 for t in items if t.resolved is not None)
    auto = sum(1 for t in items if t.resolved is not None and t.auto_resolved)
    escalated = sum(1 for m in measures if m.escalated)
    reasons: Counter[str] = Counter()
    for t in items:
        reasons.update({k: v for k, v in t.suppressed_alerts.items() if v})
    suppressed = sum(reasons.values())
    alerts = sum(t.alerts for t in items)
    return IncidentKpis(
        total_incident_count=count,
        total_incidents_acknowledged=sum(1 for m in measures if m.seconds_to_first_ack is not None),
        total_incidents_auto_resolved=auto,
        total_incidents_reassigned=sum(1 for t in items if t.reassignment_count > 0),
        total_escalation_count=sum(t.escalation_count for t in items),
        escalated_incidents=escalated,
        escalation_rate=escalated / count if count else None,
        auto_resolved_share=auto / resolved if resolved else None,
        total_engaged_seconds=sum(m.engaged_seconds or 0.0 for m in measures),
        total_snoozed_seconds=sum(t.snoozed_seconds for t in items),
        seconds_to_first_ack=summarize(_present(m.seconds_to_first_ack for m in measures)),
        seconds_to_resolve=summarize(_present(m.seconds_to_resolve for m in measures)),
        seconds_to_engage=summarize(_present(m.seconds_to_engage for m in measures)),
        seconds_to_mobilize=summarize(_present(m.seconds_to_mobilize for m in measures)),
        total_alerts=alerts,
        alerts_per_incident=alerts / count if count else None,
        suppressed_alerts=suppressed,
        suppressed_share=suppressed / alerts if alerts else None,
        suppressed_by_reason=dict(sorted(reasons.items())),
    )


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def top_sources(alert_sources: Iterable[tuple[str, int]], n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` noisiest alert sources from ``(source, alert count)`` pairs (a source may
    appear more than once), most alerts first, ties by name."""
    totals: Counter[str] = Counter()
    for source, count in alert_sources:
        totals[source] += count
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
