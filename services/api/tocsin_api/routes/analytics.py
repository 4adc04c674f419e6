"""Reports from insight: incident KPIs, a KPI's time series with its trend, SLA breaches,
recurring problems, the overview (availability, change failure, interruptions, noise), and
an incident's post-incident review draft (Markdown).

Every call goes to insight's InsightService with the caller's credential; insight decides
who may read what (a team's figures: a viewer of that team; across teams: a manager of
every team, or an admin).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from tocsin.v1 import insight_service_pb2 as pb
from tocsin_common.timeutil import to_timestamp

from tocsin_api import analytics, models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, state_of
from tocsin_api.problems import invalid

router = APIRouter(prefix="/api/v1", tags=["analytics"])


@dataclass(frozen=True)
class Filters:
    team_id: str
    service_id: str
    urgency: str
    priority: str
    since: datetime | None
    until: datetime | None
    time_zone: str

    def message(self) -> pb.InsightFilter:
        f = pb.InsightFilter(
            team_id=self.team_id,
            service_id=self.service_id,
            urgency=self.urgency,
            priority=self.priority,
            time_zone=self.time_zone,
        )
        if self.since is not None:
            f.since.CopyFrom(to_timestamp(self.since))
        if self.until is not None:
            f.until.CopyFrom(to_timestamp(self.until))
        return f


def filters(
    team_id: Annotated[str | None, Query(max_length=200)] = None,
    service_id: Annotated[str | None, Query(max_length=200)] = None,
    urgency: Annotated[models.UrgencyName | None, Query()] = None,
    priority: Annotated[
        str | None, Query(max_length=32, description="an insight.priorities rule's id, e.g. P1")
    ] = None,
    since: Annotated[datetime | None, Query(description="created at or after (RFC 3339)")] = None,
    until: Annotated[datetime | None, Query(description="created before (RFC 3339)")] = None,
    time_zone: Annotated[
        str | None,
        Query(max_length=64, description="IANA zone periods are cut in (default UTC)"),
    ] = None,
) -> Filters:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise invalid(name, "needs a time zone offset (RFC 3339), e.g. 2026-01-01T00:00:00Z")
    if since is not None and until is not None and until <= since:
        raise invalid("until", "must be after since")
    return Filters(
        team_id or "",
        service_id or "",
        urgency or "",
        priority or "",
        since,
        until,
        time_zone or "",
    )


FiltersDep = Depends(filters)


@router.get(
    "/analytics/incidents",
    response_model=models.Report,
    summary="Incident KPIs (MTTA, MTTR ... as distributions) per group and period",
)
async def incident_report(
    request: Request,
    caller: Caller = CallerDep,
    f: Filters = FiltersDep,
    group_by: Annotated[
        list[models.GroupName] | None, Query(description="dimensions, in order (repeat it)")
    ] = None,
    period: Annotated[
        models.PeriodName | None, Query(description="one row per day, week or month")
    ] = None,
) -> dict[str, Any]:
    groups = group_by or []
    for i, name in enumerate(groups):
        if name in groups[:i]:
            raise invalid(f"group_by[{i}]", f"{name!r} is given twice")
    reply = await call(
        state_of(request).backends.insight.Report,
        pb.ReportRequest(
            filter=f.message(), group_by=analytics.insight_groups(groups), period=period or ""
        ),
        caller.credential,
        analytics.RENAME,
    )
    return analytics.report(reply, groups, period or "", f.time_zone)


@router.get(
    "/analytics/timeseries",
    response_model=models.Timeseries,
    summary="One KPI per period, with the last period's trend",
)
async def timeseries(
    request: Request,
    metric: models.MetricName,
    caller: Caller = CallerDep,
    f: Filters = FiltersDep,
    period: Annotated[models.PeriodName, Query()] = "day",
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.insight.Timeseries,
        pb.TimeseriesRequest(filter=f.message(), metric=metric, period=period),
        caller.credential,
        analytics.RENAME,
    )
    return analytics.timeseries(reply, metric, period)


@router.get(
    "/analytics/breaches",
    response_model=models.Breaches,
    summary="SLA attainment per priority, and the breaches (business time)",
)
async def breaches(
    request: Request,
    caller: Caller = CallerDep,
    f: Filters = FiltersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.insight.Breaches,
        pb.BreachesRequest(filter=f.message(), limit=limit),
        caller.credential,
        analytics.RENAME,
    )
    return analytics.breaches(reply)


@router.get(
    "/analytics/problems",
    response_model=models.Problems,
    summary="Recurring incidents (same service and fingerprint) opened as problems",
)
async def recurring_problems(
    request: Request, caller: Caller = CallerDep, f: Filters = FiltersDep
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.insight.Problems,
        pb.ProblemsRequest(filter=f.message()),
        caller.credential,
        analytics.RENAME,
    )
    return analytics.problems(reply)


@router.get(
    "/analytics/overview",
    response_model=models.Overview,
    summary="Availability and error budget, change failure, interruptions, noisy sources",
)
async def overview(
    request: Request,
    caller: Caller = CallerDep,
    f: Filters = FiltersDep,
    top_sources: Annotated[
        int, Query(ge=1, le=100, description="how many noisy sources (default 10)")
    ] = 10,
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.insight.Overview,
        pb.OverviewRequest(filter=f.message(), top_sources=top_sources),
        caller.credential,
        analytics.RENAME,
    )
    return analytics.overview(reply)


@router.get(
    "/incidents/{incident_id}/review_draft",
    summary="A post-incident review draft (Markdown) from the incident's timeline",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}},
    tags=["incidents"],
)
async def review_draft(incident_id: str, request: Request, caller: Caller = CallerDep) -> Response:
    reply = await call(
        state_of(request).backends.insight.ReviewDraft,
        pb.ReviewDraftRequest(incident_id=incident_id),
        caller.credential,
    )
    return Response(reply.markdown, media_type="text/markdown; charset=utf-8")
