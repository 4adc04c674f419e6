"""insight's answers as the API's JSON, and the API's report query as insight's (pure).

Names are insight's, which are PagerDuty Analytics' where the two overlap
(``total_incident_count``, ``seconds_to_first_ack`` ...; docs/insight.md). The one rename:
the API calls people users, so the group dimension ``person`` is ``user`` here and its
value is ``user_id`` in a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tocsin.v1 import insight_service_pb2 as pb

from tocsin_api.convert import ts

# API group_by value -> (insight's dimension, the row's key)
GROUPS: dict[str, tuple[str, str]] = {
    "service": ("service", "service_id"),
    "team": ("team", "team_id"),
    "user": ("person", "user_id"),
    "urgency": ("urgency", "urgency"),
    "priority": ("priority", "priority"),
}

# insight's field names in its INVALID_ARGUMENT messages -> the API's query parameters
RENAME: dict[str, str] = {
    "filter.team_id": "team_id",
    "filter.service_id": "service_id",
    "filter.urgency": "urgency",
    "filter.priority": "priority",
    "filter.since": "since",
    "filter.until": "until",
    "filter.time_zone": "time_zone",
    "top_sources": "top_sources",
    **{f"group_by[{i}]": f"group_by[{i}]" for i in range(len(GROUPS))},
}

DISTRIBUTIONS = (
    "seconds_to_first_ack",
    "seconds_to_resolve",
    "seconds_to_engage",
    "seconds_to_mobilize",
)


def insight_groups(group_by: Sequence[str]) -> list[str]:
    """The API's group_by as insight's dimensions (the values were validated already)."""
    return [GROUPS[g][0] for g in group_by]


def distribution(d: pb.Distribution) -> dict[str, Any]:
    return {
        "count": d.count,
        "mean": d.mean,
        "p50": d.p50,
        "p90": d.p90,
        "p95": d.p95,
        "max": d.max,
    }


def report_row(row: pb.ReportRow, group_by: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in group_by:
        dimension, key = GROUPS[name]
        out[key] = row.group.get(dimension, "")
    out["period_start"] = ts(row.period_start, row.HasField("period_start"))
    out["total_incident_count"] = row.total_incident_count
    for name in DISTRIBUTIONS:
        out[name] = distribution(getattr(row, name))
    out.update(
        escalation_rate=row.escalation_rate,
        auto_resolved_share=row.auto_resolved_share,
        alerts_per_incident=row.alerts_per_incident,
        suppressed_share=row.suppressed_share,
        total_notifications=row.total_notifications,
        total_escalations=row.total_escalations,
        total_reassignments=row.total_reassignments,
        total_snoozed_seconds=row.total_snoozed_seconds,
    )
    return out


def report(
    reply: pb.ReportResponse, group_by: Sequence[str], period: str, time_zone: str
) -> dict[str, Any]:
    return {
        "data": [report_row(r, group_by) for r in reply.rows],
        "group_by": list(group_by),
        "aggregate_unit": period or None,
        "time_zone": time_zone or "UTC",
        "definition_version": reply.definition_version,
    }


def timeseries(reply: pb.TimeseriesResponse, metric: str, period: str) -> dict[str, Any]:
    trend: dict[str, Any] | None = None
    if reply.HasField("trend"):
        t = reply.trend
        trend = {
            "current": t.current,
            "previous": t.previous,
            "difference": t.difference,
            "ci_low": t.ci_low,
            "ci_high": t.ci_high,
            "significant": t.significant,
            "summary": t.summary,
        }
    return {
        "metric": metric,
        "aggregate_unit": period,
        "points": [
            {"period_start": ts(p.period_start), "value": p.value, "count": p.count}
            for p in reply.points
        ],
        "trend": trend,
        "definition_version": reply.definition_version,
    }


def breaches(reply: pb.BreachesResponse) -> dict[str, Any]:
    return {
        "breaches": [
            {
                "incident_id": b.incident_id,
                "service_id": b.service_id,
                "team_id": b.team_id,
                "priority": b.priority,
                "kind": b.kind,
                "target_seconds": b.target_seconds,
                "business_seconds": b.business_seconds,
                "created_at": ts(b.created_at),
            }
            for b in reply.breaches
        ],
        "ack_within_target_rate": reply.ack_within_target_rate,
        "resolve_within_target_rate": reply.resolve_within_target_rate,
    }


def problems(reply: pb.ProblemsResponse) -> dict[str, Any]:
    return {
        "problems": [
            {
                "problem_id": p.problem_id,
                "service_id": p.service_id,
                "fingerprint": p.fingerprint,
                "incident_count": p.incident_count,
                "incident_ids": list(p.incident_ids),
                "first_seen": ts(p.first_seen),
                "last_seen": ts(p.last_seen),
            }
            for p in reply.problems
        ]
    }


def overview(reply: pb.OverviewResponse) -> dict[str, Any]:
    """Availability and error budget per service, change failure rate and recovery time,
    interruptions per person by hour class, and the noisiest alert sources."""
    cf = reply.change_failure
    return {
        "availability": [
            {
                "service_id": a.service_id,
                "target_percent": a.target_percent,
                "window_start": ts(a.window_start, a.HasField("window_start")),
                "window_end": ts(a.window_end, a.HasField("window_end")),
                "availability": a.availability,
                "up_time_pct": a.up_time_pct,
                "impact_seconds": a.impact_seconds,
                "error_budget_seconds": a.error_budget_seconds,
                "budget_remaining_seconds": a.budget_remaining_seconds,
                "budget_remaining_ratio": a.budget_remaining_ratio,
                "burn_rate": a.burn_rate,
            }
            for a in reply.availability
        ],
        "change_failure": {
            "total_changes": cf.total_changes,
            "failed_changes": cf.failed_changes,
            "change_failure_rate": cf.change_failure_rate,
            "unrecovered": cf.unrecovered,
            "recovery_seconds": distribution(cf.recovery_seconds),
        },
        "interruptions": [
            {
                "user_id": p.user_id,
                "total_notifications": p.total_notifications,
                "total_interruptions": p.total_interruptions,
                "total_business_hour_interruptions": p.total_business_hour_interruptions,
                "total_off_hour_interruptions": p.total_off_hour_interruptions,
                "total_sleep_hour_interruptions": p.total_sleep_hour_interruptions,
            }
            for p in reply.interruptions
        ],
        "top_sources": [{"source": n.source, "alerts": n.alerts} for n in reply.top_sources],
        "definition_version": reply.definition_version,
    }
