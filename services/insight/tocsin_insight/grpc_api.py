"""gRPC InsightService: thin handlers over reports.py and the domain.

Access: a team's figures need ``insight.read`` (viewer) on that team; a question not
narrowed to one team (no team and no service in the filter) needs ``report.read``
(manager) on every team of the config — or admin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import insight_service_pb2 as pb
from tocsin.v1 import insight_service_pb2_grpc
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import service_teams
from tocsin_common.auth.policy import Resource
from tocsin_common.automation.dry_run import services_in_scope
from tocsin_common.config import ConfigStore

from tocsin_insight import automation_dry_run, reports, views
from tocsin_insight.reports import DistributionRow, Filter, QueryError

log = logging.getLogger("tocsin.insight.grpc")

Generation = Callable[[], Awaitable[str]]
MAX_UPTIME_SERVICES = 1000
Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


def _dt(ts: Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def filter_from(request_filter: pb.InsightFilter, present: bool) -> Filter:
    f = request_filter if present else pb.InsightFilter()
    return reports.make_filter(
        team_id=f.team_id,
        service_id=f.service_id,
        urgency=f.urgency,
        priority=f.priority,
        since=_dt(f.since, f.HasField("since")),
        until=_dt(f.until, f.HasField("until")),
        time_zone=f.time_zone,
    )


def _distribution(d: DistributionRow) -> pb.Distribution:
    return pb.Distribution(count=d.count, mean=d.mean, p50=d.p50, p90=d.p90, p95=d.p95, max=d.max)


def _stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


class InsightServicer(insight_service_pb2_grpc.InsightServiceServicer):
    def __init__(
        self,
        pool: Any,
        generation: Generation,
        config: ConfigStore,
        access: AccessControl,
    ) -> None:
        self._pool = pool  # psycopg_pool-like: async with pool.connection() as conn
        self._generation = generation
        self._config = config
        self._access = access

    async def _authorize(self, context: grpc.aio.ServicerContext, f: Filter) -> None:
        config = self._config.current
        teams: set[str] = set()
        if f.team_id:
            teams.add(f.team_id)
        if f.service_id:
            owners = service_teams(config, f.service_id)
            # A service no team owns: only admins (decide's rule for team-less resources).
            teams |= owners or {""}
        if teams:
            for team in sorted(teams):
                await self._access.authorize(
                    context,
                    "insight.read",
                    Resource("report", team, frozenset({team}) if team else frozenset()),
                )
            return
        every = sorted(t.id for t in config.teams)
        if not every:
            await self._access.authorize(context, "report.read", Resource("report", "all"))
        for team in every:
            await self._access.authorize(
                context, "report.read", Resource("report", "all teams", frozenset({team}))
            )

    async def _filter(self, request: Any, context: grpc.aio.ServicerContext) -> Filter:
        try:
            f = filter_from(request.filter, request.HasField("filter"))
        except QueryError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        await self._authorize(context, f)
        return f

    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportResponse:
        f = await self._filter(request, context)
        try:
            query = reports.report_query(f, list(request.group_by), request.period)
        except QueryError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        generation = await self._generation()
        async with self._pool.connection() as conn:
            rows = await reports.report(conn, generation, query)
        reply = pb.ReportResponse(definition_version=generation)
        for row in rows:
            out = reply.rows.add(
                total_incident_count=row.incidents,
                seconds_to_first_ack=_distribution(row.seconds_to_first_ack),
                seconds_to_resolve=_distribution(row.seconds_to_resolve),
                seconds_to_engage=_distribution(row.seconds_to_engage),
                seconds_to_mobilize=_distribution(row.seconds_to_mobilize),
                escalation_rate=row.escalation_rate,
                auto_resolved_share=row.auto_resolved_share,
                alerts_per_incident=row.alerts_per_incident,
                suppressed_share=row.suppressed_share,
                total_notifications=row.notifications,
                total_escalations=row.escalations,
                total_reassignments=row.reassignments,
                total_snoozed_seconds=row.snoozed_seconds,
            )
            out.group.update(row.group)
            if row.period_start is not None:
                out.period_start.CopyFrom(_stamp(row.period_start))
        return reply

    async def Timeseries(
        self, request: pb.TimeseriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.TimeseriesResponse:
        f = await self._filter(request, context)
        try:
            metric = reports.check_metric(request.metric)
            query = reports.report_query(f, [], request.period or "day")
        except QueryError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        generation = await self._generation()
        async with self._pool.connection() as conn:
            points = await reports.timeseries(conn, generation, f, metric, query.period)
        reply = pb.TimeseriesResponse(definition_version=generation)
        for point in points:
            reply.points.add(
                period_start=_stamp(point.period_start), value=point.value, count=point.count
            )
        found = views.trend(points, metric)
        if found is not None:
            significant = found.verdict in ("increase", "decrease")
            reply.trend.CopyFrom(
                pb.Trend(
                    current=found.current or 0.0,
                    previous=found.previous or 0.0,
                    difference=found.difference or 0.0,
                    ci_low=found.ci_low or 0.0,
                    ci_high=found.ci_high or 0.0,
                    significant=significant,
                    summary=found.verdict,
                )
            )
        return reply

    async def Breaches(
        self, request: pb.BreachesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BreachesResponse:
        f = await self._filter(request, context)
        limit = request.limit or 100
        if not 0 < limit <= 1000:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"limit: {limit} is not between 1 and 1000"
            )
        generation = await self._generation()
        async with self._pool.connection() as conn:
            found = await views.sla_breaches(
                conn, generation, f, self._config.current, datetime.now(UTC)
            )
        reply = pb.BreachesResponse(
            ack_within_target_rate=found.ack.rate if found.ack.rate is not None else 0.0,
            resolve_within_target_rate=(
                found.resolve.rate if found.resolve.rate is not None else 0.0
            ),
        )
        for item in found.breaches[:limit]:
            reply.breaches.add(
                incident_id=item.breach.incident_id,
                service_id=item.incident["service_id"],
                team_id=item.incident["team_id"],
                priority=item.breach.priority,
                kind=item.breach.clock,
                target_seconds=item.clock.target_seconds,
                business_seconds=item.clock.elapsed_seconds,
                created_at=_stamp(item.incident["created_at"]),
            )
        return reply

    async def Problems(
        self, request: pb.ProblemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProblemsResponse:
        f = await self._filter(request, context)
        generation = await self._generation()
        async with self._pool.connection() as conn:
            found = await views.problems(conn, generation, f, self._config.current)
        reply = pb.ProblemsResponse()
        for problem in found:
            reply.problems.add(
                problem_id=problem.problem_id,
                service_id=problem.service,
                fingerprint=problem.fingerprint,
                incident_count=problem.count,
                incident_ids=list(problem.incident_ids),
                first_seen=_stamp(problem.first_at),
                last_seen=_stamp(problem.last_at),
            )
        return reply

    async def Overview(
        self, request: pb.OverviewRequest, context: grpc.aio.ServicerContext
    ) -> pb.OverviewResponse:
        f = await self._filter(request, context)
        top = request.top_sources or 10
        if not 0 < top <= 100:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"top_sources: {top} is not between 1 and 100"
            )
        generation = await self._generation()
        async with self._pool.connection() as conn:
            found = await views.overview(
                conn, generation, f, self._config.current, datetime.now(UTC), top
            )
        reply = pb.OverviewResponse(definition_version=generation)
        for a in found.availability:
            reply.availability.add(
                service_id=a.service,
                target_percent=round(a.target * 100, 9),  # the domain keeps a fraction
                window_start=_stamp(a.window_start),
                window_end=_stamp(a.window_end),
                availability=a.availability,
                up_time_pct=a.up_time_pct,
                impact_seconds=a.impact_seconds,
                error_budget_seconds=a.error_budget_seconds,
                budget_remaining_seconds=a.budget_remaining_seconds,
                budget_remaining_ratio=a.budget_remaining_ratio,
                burn_rate=a.burn_rate,
            )
        cf = found.change_failure
        r = cf.recovery
        reply.change_failure.CopyFrom(
            pb.ChangeFailure(
                total_changes=cf.total_changes,
                failed_changes=cf.failed_changes,
                change_failure_rate=cf.change_failure_rate or 0.0,
                unrecovered=cf.unrecovered,
                recovery_seconds=pb.Distribution(
                    count=r.count,
                    mean=r.mean or 0.0,
                    p50=r.p50 or 0.0,
                    p90=r.p90 or 0.0,
                    p95=r.p95 or 0.0,
                    max=r.max or 0.0,
                ),
            )
        )
        for person, counts in sorted(found.interruptions.items()):
            reply.interruptions.add(
                user_id=person,
                total_notifications=counts.total_notifications,
                total_interruptions=counts.total_interruptions,
                total_business_hour_interruptions=counts.total_business_hour_interruptions,
                total_off_hour_interruptions=counts.total_off_hour_interruptions,
                total_sleep_hour_interruptions=counts.total_sleep_hour_interruptions,
            )
        for source, alerts in found.top_sources:
            reply.top_sources.add(source=source, alerts=alerts)
        return reply

    async def Uptime(
        self, request: pb.UptimeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UptimeResponse:
        await self._access.authorize(context, "status_page.read", Resource("status_page"))
        services = list(dict.fromkeys(request.service_ids))
        if len(services) > MAX_UPTIME_SERVICES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"service_ids: {len(services)} given, at most {MAX_UPTIME_SERVICES}",
            )
        if not request.HasField("since"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since: is required")
        start = request.since.ToDatetime(tzinfo=UTC)
        end = (
            request.until.ToDatetime(tzinfo=UTC) if request.HasField("until") else datetime.now(UTC)
        )
        if end <= start:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "until: must be after since")
        generation = await self._generation()
        async with self._pool.connection() as conn:
            found = await views.uptime(conn, generation, services, start, end)
        return pb.UptimeResponse(
            services=[
                pb.ServiceUptime(
                    service_id=a.service, availability=a.availability, up_time_pct=a.up_time_pct
                )
                for a in found
            ]
        )

    async def ReviewDraft(
        self, request: pb.ReviewDraftRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReviewDraftResponse:
        if not request.incident_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incident_id: is required")
        generation = await self._generation()
        config = self._config.current
        async with self._pool.connection() as conn:
            found = await views.review(
                conn, generation, request.incident_id, config, datetime.now(UTC)
            )
        resource = Resource(
            "incident",
            request.incident_id,
            service_teams(config, found[0]) if found is not None else frozenset(),
        )
        # Unknown, and not the caller's to read, answer alike: ids cannot be probed.
        if found is None or not self._access.allows("insight.read", resource):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"incident_id: no incident {request.incident_id!r}"
            )
        assert found is not None
        await self._access.authorize(context, "insight.read", resource)
        return pb.ReviewDraftResponse(markdown=found[1])

    async def AutomationDryRun(
        self, request: pb.AutomationDryRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.AutomationDryRunResponse:
        """How often a rule would have fired (docs/automation.md#dry-run): needs
        ``automation.dry_run`` on the teams of the configured services the rule's ``service``
        matchers admit (the incidents counted), on every team when it has none."""
        config = self._config.current
        now = datetime.now(UTC)
        try:
            rule = automation_dry_run.rule_of(config, request.rule_id, request.rule_json)
            since, until = automation_dry_run.window_of(
                _dt(request.since, request.HasField("since")),
                _dt(request.until, request.HasField("until")),
                now,
            )
        except automation_dry_run.NotFound as e:  # rule ids are no secret (the config's)
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except automation_dry_run.DryRunError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        services = services_in_scope(rule, [s.id for s in config.services])
        await self._authorize_dry_run(context, rule.id, services)
        generation = await self._generation()
        try:
            async with self._pool.connection() as conn:
                answer = await automation_dry_run.run(
                    conn, generation, rule, since, until, services
                )
        except automation_dry_run.NotReady as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        result = answer.result
        return pb.AutomationDryRunResponse(
            rule_id=result.rule_id,
            since=_stamp(result.since),
            until=_stamp(result.until),
            fires=result.fires,
            incidents=result.incidents,
            by_trigger=result.by_trigger,
            sample=list(result.sample),
            summary=result.summary,
            incidents_read=answer.incidents_read,
            definition_version=generation,
        )

    async def _authorize_dry_run(
        self, context: grpc.aio.ServicerContext, rule_id: str, services: tuple[str, ...] | None
    ) -> None:
        config = self._config.current
        if services is None:
            teams = {t.id for t in config.teams}
        else:
            teams = set()
            for service in services:
                # A service no team owns: only admins (decide's rule for team-less resources).
                teams |= service_teams(config, service) or {""}
        if not teams or "" in teams:  # no service at all, or one of no team: admins only
            await self._access.authorize(
                context, "automation.dry_run", Resource("automation_rule", rule_id)
            )
        for team in sorted(teams - {""}):
            await self._access.authorize(
                context,
                "automation.dry_run",
                Resource("automation_rule", rule_id, frozenset({team})),
            )
