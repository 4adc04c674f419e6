"""gRPC DeployGateService: thin handlers over the pure gate (tocsin_common/change/gate.py).

State: open incidents and changes in flight from the serving generation's incident and
change facts, dependencies from the config, error budget and burn rate from insight's
availability computation, who is on call from escalation (``oncall_source``), ad-hoc freezes
and overrides from PostgreSQL (tables of migrations 0002/0003, shared by every replica).
Access: ``gate.evaluate`` (responder) and ``gate.override`` / ``gate.freeze`` (manager) on
the service's team; a freeze of every service: admin; a change's timeline: ``insight.read``.
Every decision and override is an audit record; every decision about a change (asked with
its change id) and every override is an entry of the change's timeline.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import sql
from tocsin.v1 import deploy_gate_service_pb2 as pb
from tocsin.v1 import deploy_gate_service_pb2_grpc
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import service_teams
from tocsin_common.auth.policy import Decision as PolicyDecision
from tocsin_common.auth.policy import Resource
from tocsin_common.change.gate import (
    MAX_REASON_CHARS,
    Decision,
    GateError,
    GateRequest,
    GateRules,
    OnCallPerson,
    evaluate,
    make_override,
    with_override,
)
from tocsin_common.config import ConfigStore, TocsinConfig

from tocsin_insight.change_timeline import DECISION_COLUMNS, OVERRIDE_COLUMNS, timeline
from tocsin_insight.domain.availability import Availability, ImpactSlice, availability
from tocsin_insight.gate_state import (
    CHANGE_COLUMNS,
    changes_in_flight_of,
    dependencies_of,
    freeze_of,
    override_of,
    state_of,
)
from tocsin_insight.oncall_source import OnCallSource, OnCallUnknown
from tocsin_insight.schema import generation_schema

log = logging.getLogger("tocsin.insight.gate")

Generation = Callable[[], Awaitable[str]]
MAX_FREEZE_ITEMS = 100


def _stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def decision_message(decision: Decision) -> pb.GateDecision:
    out = pb.GateDecision(
        evaluation_id=decision.evaluation_id,
        service=decision.service,
        environment=decision.environment,
        version=decision.version,
        change_id=decision.change_id,
        outcome=decision.outcome,
        evaluated_outcome=decision.evaluated_outcome,
        dry_run=decision.dry_run,
        evaluated_at=_stamp(decision.evaluated_at),
        valid_until=_stamp(decision.valid_until),
    )
    for r in decision.results:
        out.rules.add(rule=r.rule, outcome=r.outcome, reason=r.reason)
    o = decision.override
    if o is not None:
        out.override.CopyFrom(
            pb.GateOverrideInfo(
                actor=o.actor,
                reason=o.reason,
                created_at=_stamp(o.created_at),
                expires_at=_stamp(o.expires_at),
                overridden_outcome=o.overridden_outcome,
                evaluation_id=o.evaluation_id,
            )
        )
    return out


def freeze_message(row: Any) -> pb.GateFreeze:
    f = freeze_of(row)
    return pb.GateFreeze(
        freeze_id=f.freeze_id,
        start=_stamp(f.start),
        end=_stamp(f.end),
        author=f.author,
        reason=f.reason,
        services=sorted(f.services),
        environments=sorted(f.environments),
    )


def decision_reason(decision: Decision) -> str:
    """What a decision's rules said, in a line: the reasons of the rules that did not pass
    (a timeline entry's text)."""
    said = [f"{r.rule}: {r.reason}" for r in decision.results if r.outcome != "pass"]
    return "; ".join(said)[:1000] if said else "every rule passed"


_FREEZE_COLUMNS = "freeze_id, start_at, end_at, author, reason, services, environments"
_OVERRIDE_COLUMNS = (
    "evaluation_id, service, environment, version, actor, reason, created_at, expires_at, "
    "overridden_outcome"
)


class DeployGateServicer(deploy_gate_service_pb2_grpc.DeployGateServiceServicer):
    def __init__(
        self,
        pool: Any,
        generation: Generation,
        config: ConfigStore,
        access: AccessControl,
        now: Callable[[], datetime] | None = None,
        on_call: OnCallSource | None = None,
    ) -> None:
        self._pool = pool
        self._generation = generation
        self._config = config
        self._access = access
        self._now = now or (lambda: datetime.now(UTC))
        self._on_call = on_call
        self._lifecycle_columns: dict[str, bool] = {}  # generation -> change facts have them

    async def _has_lifecycle(self, conn: Any, generation: str) -> bool:
        """Whether ``generation``'s change facts carry the change lifecycle's fields (those
        of definition version 2 on; an older generation serves until the new one caught up)."""
        if generation not in self._lifecycle_columns:
            cur = await conn.execute(
                "SELECT definition FROM insight_generations WHERE name = %s", (generation,)
            )
            row = await cur.fetchone()
            self._lifecycle_columns[generation] = row is not None and int(row[0]) >= 2
        return self._lifecycle_columns[generation]

    async def _changes_in_flight(
        self, conn: Any, generation: str, rules: GateRules, service: str, now: datetime
    ) -> tuple[Any, str]:
        """A cursor over the change events of ``service`` that may still be in flight (None:
        no rule asks), and why they are unknown ("" when known). ``generation``: "" when the
        serving generation's change facts lack the lifecycle's fields."""
        stale = [g.changes_in_flight.stale_after for g in rules.gates if g.changes_in_flight]
        if not stale:
            return None, ""
        if not generation:
            return None, "insight's change facts do not carry change statuses yet (replaying)"
        # Twice the longest stale_after: a change started that long ago is reported stale.
        since = now - 2 * max(stale)
        cur = await conn.execute(
            sql.SQL(
                "SELECT {cols} FROM {s}.change_facts WHERE change_id IN ("
                "SELECT change_id FROM {s}.change_facts WHERE service_id = %s "
                "AND change_id <> '' AND status = 'started' AND at >= %s)"
            ).format(s=generation_schema(generation), cols=sql.SQL(CHANGE_COLUMNS)),
            (service, since),
        )
        return cur, ""

    def _resource(self, config: TocsinConfig, service: str) -> Resource:
        return Resource("service", service, service_teams(config, service))

    async def _audit(
        self,
        context: grpc.aio.ServicerContext,
        rpc: str,
        action: str,
        resource: Resource,
        reason: str,
    ) -> None:
        await self._access.audit.record(
            principal=self._access.principal(),
            action=action,
            resource=resource,
            decision=PolicyDecision(True, reason),
            peer=context.peer() or "",
            method=f"/tocsin.v1.DeployGateService/{rpc}",
        )

    async def _budgets(
        self, conn: Any, schema: sql.Identifier, config: TocsinConfig, rules: GateRules, svc: str
    ) -> dict[str, Availability | None]:
        if not any(g.error_budget is not None for g in rules.gates):
            return {}
        slo = config.insight.slo(svc)
        if slo is None:
            return {svc: None}
        end = self._now()
        start = end - slo.window
        cur = await conn.execute(
            sql.SQL(
                "SELECT coalesce(impact_start, created_at), impact_end, impact "
                "FROM {s}.incident_facts WHERE service_id = %s AND impact <> '' "
                "AND coalesce(impact_start, created_at) < %s "
                "AND (impact_end IS NULL OR impact_end > %s)"
            ).format(s=schema),
            (svc, end, start),
        )
        slices = [ImpactSlice(svc, b, f, level) for b, f, level in await cur.fetchall()]
        return {svc: availability(svc, slices, start, end, slo.availability_target)}

    async def _who_is_on_call(
        self, config: TocsinConfig, rules: GateRules, service: str, unknown: dict[str, str]
    ) -> tuple[OnCallPerson, ...] | None:
        if not any(g.on_call is not None for g in rules.gates):
            return None
        try:
            if self._on_call is None:
                raise OnCallUnknown("insight has no on-call source")
            return await self._on_call.on_call(config, service)
        except OnCallUnknown as e:
            unknown["on_call"] = str(e)
            return None

    async def _decide(self, request: GateRequest, actor: str) -> Decision:
        config = self._config.current
        now = self._now()
        rules = GateRules.for_request(
            config.change_control, request, [p.id for p in config.insight.priorities]
        )
        generation = await self._generation()
        unknown: dict[str, str] = {}
        # escalation is asked (or its answer read from the cache) while PostgreSQL answers.
        on_call_task = asyncio.ensure_future(
            self._who_is_on_call(config, rules, request.service, unknown)
        )
        watched = [request.service]
        if any(g.open_incidents and g.open_incidents.include_dependencies for g in rules.gates):
            watched += dependencies_of(config, request.service)
        try:
            return await self._decide_with(
                request, actor, config, rules, generation, now, watched, unknown, on_call_task
            )
        finally:
            if not on_call_task.done():  # PostgreSQL failed first
                on_call_task.cancel()

    async def _decide_with(
        self,
        request: GateRequest,
        actor: str,
        config: TocsinConfig,
        rules: GateRules,
        generation: str,
        now: datetime,
        watched: list[str],
        unknown: dict[str, str],
        on_call_task: asyncio.Future[tuple[OnCallPerson, ...] | None],
    ) -> Decision:
        async with self._pool.connection() as conn:
            lifecycle = bool(generation) and await self._has_lifecycle(conn, generation)
            # One round trip for the reads (psycopg's pipeline mode).
            async with conn.pipeline():
                incidents_cur = None
                if generation and any(g.open_incidents for g in rules.gates):
                    incidents_cur = await conn.execute(
                        sql.SQL(
                            "SELECT incident_id, service_id, urgency, priority, title, status "
                            "FROM {s}.incident_facts WHERE status <> 'resolved' "
                            "AND service_id = ANY(%s)"
                        ).format(s=generation_schema(generation)),
                        (watched,),
                    )
                freezes_cur = await conn.execute(
                    f"SELECT {_FREEZE_COLUMNS} FROM gate_freezes WHERE end_at > %s "
                    "AND (services = '{}' OR %s = ANY(services))",
                    (now, request.service),
                )
                overrides_cur = await conn.execute(
                    f"SELECT {_OVERRIDE_COLUMNS} FROM gate_overrides WHERE service = %s "
                    "AND environment = %s AND version = %s AND expires_at > %s",
                    (request.service, request.environment, request.version, now),
                )
                changes_cur, why = await self._changes_in_flight(
                    conn, generation if lifecycle else "", rules, request.service, now
                )
                incidents = list(await incidents_cur.fetchall()) if incidents_cur else []
                freezes = [freeze_of(row) for row in await freezes_cur.fetchall()]
                overrides = [override_of(row) for row in await overrides_cur.fetchall()]
                change_rows = list(await changes_cur.fetchall()) if changes_cur else []
            if why:
                unknown["changes_in_flight"] = why
            budgets: dict[str, Availability | None] = {}
            if generation:
                budgets = await self._budgets(
                    conn, generation_schema(generation), config, rules, request.service
                )
            window = 2 * max(
                (g.changes_in_flight.stale_after for g in rules.gates if g.changes_in_flight),
                default=timedelta(0),
            )
            on_call = await on_call_task
            state = state_of(
                config,
                request.service,
                incidents,
                budgets,
                freezes,
                overrides,
                on_call=on_call,
                changes=changes_in_flight_of(change_rows, now, window),
                unknown=unknown,
            )
            evaluation_id = "gate-" + uuid.uuid4().hex
            decision = evaluate(
                GateRequest(
                    request.service,
                    request.environment,
                    request.version,
                    request.change_id,
                    request.dry_run,
                    evaluation_id,
                ),
                state,
                rules,
                now,
            )
            if decision.evaluated_outcome != "pass" or decision.change_id:
                # Failed and warned decisions (what an override by evaluation id reads), and
                # every decision about a change (its timeline).
                await conn.execute(
                    "INSERT INTO gate_decisions (evaluation_id, service, environment, version, "
                    "change_id, evaluated_outcome, dry_run, evaluated_at, actor, outcome, "
                    "reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (
                        decision.evaluation_id,
                        decision.service,
                        decision.environment,
                        decision.version,
                        decision.change_id,
                        decision.evaluated_outcome,
                        decision.dry_run,
                        decision.evaluated_at,
                        actor,
                        decision.outcome,
                        decision_reason(decision),
                    ),
                )
        return decision

    async def Evaluate(
        self, request: pb.EvaluateGateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GateDecision:
        try:
            gate_request = GateRequest(
                request.service,
                request.environment,
                request.version,
                request.change_id,
                request.dry_run,
            )
        except GateError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        config = self._config.current
        resource = self._resource(config, request.service)
        if not self._access.allows("gate.evaluate", resource):
            await self._access.authorize(context, "gate.evaluate", resource)  # audited denial
        decision = await self._decide(gate_request, self._access.principal().id)
        await self._audit(
            context,
            "Evaluate",
            "gate.evaluate",
            Resource("deploy_gate", decision.evaluation_id, resource.teams),
            f"gate {decision.outcome} (rules: {decision.evaluated_outcome}"
            f"{', dry run' if decision.dry_run else ''}) for {request.service}/"
            f"{request.environment} {request.version}",
        )
        return decision_message(decision)

    async def Override(
        self, request: pb.OverrideGateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GateDecision:
        if not request.reason.strip():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "reason: is required (say why the gate may be passed)",
            )
        config = self._config.current
        if request.evaluation_id:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT service, environment, version, change_id FROM gate_decisions "
                    "WHERE evaluation_id = %s",
                    (request.evaluation_id,),
                )
                row = await cur.fetchone()
            if row is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"evaluation_id: no failed or warned evaluation {request.evaluation_id!r}",
                )
            service, environment, version, change_id = row
        else:
            service, environment, version, change_id = (
                request.service,
                request.environment,
                request.version,
                "",
            )
            if not service or not environment:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "evaluation_id: is required (or service and environment)",
                )
        resource = self._resource(config, service)
        principal = await self._access.authorize(context, "gate.override", resource)
        try:
            decision = await self._decide(
                GateRequest(service, environment, version, change_id), principal.id
            )
            if request.evaluation_id:
                # The override names the evaluation it was asked for (re-evaluated now, so a
                # failure that has since cleared is refused as moot).
                decision = replace(decision, evaluation_id=request.evaluation_id)
            override = make_override(
                decision,
                principal.id,
                request.reason,
                self._now(),
                config.change_control.override_ttl,
            )
        except GateError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO gate_overrides ({_OVERRIDE_COLUMNS}, change_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (evaluation_id) DO NOTHING",
                (
                    override.evaluation_id,
                    override.service,
                    override.environment,
                    override.version,
                    override.actor,
                    override.reason,
                    override.created_at,
                    override.expires_at,
                    override.overridden_outcome,
                    change_id,
                ),
            )
        await self._audit(
            context,
            "Override",
            "gate.override",
            Resource("deploy_gate", override.evaluation_id, resource.teams),
            f"override of {override.overridden_outcome} for {service}/{environment} {version} "
            f"until {override.expires_at.isoformat()}: {override.reason}",
        )
        return decision_message(with_override(decision, override))

    async def _freeze_resource(
        self, context: grpc.aio.ServicerContext, services: list[str]
    ) -> None:
        config = self._config.current
        if not services:
            await self._access.authorize(context, "gate.freeze", Resource("deploy_gate", "all"))
        for service in services:
            await self._access.authorize(context, "gate.freeze", self._resource(config, service))

    async def CreateFreeze(
        self, request: pb.CreateFreezeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GateFreeze:
        now = self._now()
        start = request.start.ToDatetime(tzinfo=UTC) if request.HasField("start") else now
        problem = ""
        if not request.HasField("end"):
            problem = "end: is required"
        elif request.end.ToDatetime(tzinfo=UTC) <= max(start, now):
            problem = "end: must be after start and in the future"
        elif not request.reason.strip():
            problem = "reason: is required (say why deploys are frozen)"
        elif len(request.reason) > MAX_REASON_CHARS:
            problem = f"reason: {len(request.reason):,} characters, at most {MAX_REASON_CHARS:,}"
        elif len(request.services) > MAX_FREEZE_ITEMS:
            problem = f"services: more than {MAX_FREEZE_ITEMS}"
        elif len(request.environments) > MAX_FREEZE_ITEMS:
            problem = f"environments: more than {MAX_FREEZE_ITEMS}"
        else:
            known = {s.id for s in self._config.current.services}
            unknown = [s for s in request.services if s not in known]
            if unknown:
                problem = f"services: unknown service {unknown[0]!r}"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        services = sorted(set(request.services))
        await self._freeze_resource(context, services)
        author = self._access.principal().id
        freeze_id = "frz-" + uuid.uuid4().hex[:16]
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO gate_freezes ({_FREEZE_COLUMNS}) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_FREEZE_COLUMNS}",
                (
                    freeze_id,
                    start,
                    request.end.ToDatetime(tzinfo=UTC),
                    author,
                    request.reason.strip(),
                    services,
                    sorted(set(request.environments)),
                ),
            )
            row = await cur.fetchone()
        return freeze_message(row)

    async def ListFreezes(
        self, request: pb.ListFreezesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListFreezesResponse:
        now = self._now()
        async with self._pool.connection() as conn:
            if request.include_past:
                cur = await conn.execute(
                    f"SELECT {_FREEZE_COLUMNS} FROM gate_freezes ORDER BY start_at LIMIT 1000"
                )
            else:
                cur = await conn.execute(
                    f"SELECT {_FREEZE_COLUMNS} FROM gate_freezes WHERE end_at > %s "
                    "ORDER BY start_at LIMIT 1000",
                    (now,),
                )
            rows = await cur.fetchall()
        config = self._config.current
        reply = pb.ListFreezesResponse()
        for row in rows:
            services = list(row[5] or [])
            # A freeze is listed to whoever may evaluate one of its services (all: anyone
            # authenticated).
            if services and not any(
                self._access.allows("gate.evaluate", self._resource(config, s)) for s in services
            ):
                continue
            reply.freezes.append(freeze_message(row))
        return reply

    async def DeleteFreeze(
        self, request: pb.DeleteFreezeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteFreezeResponse:
        if not request.freeze_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "freeze_id: is required")
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT services FROM gate_freezes WHERE freeze_id = %s", (request.freeze_id,)
            )
            row = await cur.fetchone()
            if row is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"freeze_id: no freeze {request.freeze_id!r}"
                )
            await self._freeze_resource(context, list(row[0] or []))
            await conn.execute(
                "DELETE FROM gate_freezes WHERE freeze_id = %s", (request.freeze_id,)
            )
        return pb.DeleteFreezeResponse()

    async def ChangeTimeline(
        self, request: pb.ChangeTimelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeTimelineResponse:
        change_id = request.change_id
        if not change_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "change_id: is required")
        if len(change_id) > 255:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "change_id: longer than 255 characters"
            )
        generation = await self._generation()
        async with self._pool.connection() as conn:
            changes: list[Any] = []
            if generation and await self._has_lifecycle(conn, generation):
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT {cols}, source FROM {s}.change_facts "
                        "WHERE change_id = %s OR rollback_of = %s ORDER BY at LIMIT 1000"
                    ).format(s=generation_schema(generation), cols=sql.SQL(CHANGE_COLUMNS)),
                    (change_id, change_id),
                )
                changes = [(row[:-1], str(row[-1])) for row in await cur.fetchall()]
            cur = await conn.execute(
                f"SELECT {DECISION_COLUMNS} FROM gate_decisions WHERE change_id = %s "
                "ORDER BY evaluated_at LIMIT 1000",
                (change_id,),
            )
            decisions = list(await cur.fetchall())
            cur = await conn.execute(
                f"SELECT {OVERRIDE_COLUMNS} FROM gate_overrides WHERE change_id = %s "
                "ORDER BY created_at LIMIT 1000",
                (change_id,),
            )
            overrides = list(await cur.fetchall())
        entries = timeline(change_id, changes, decisions, overrides)
        service = next((e.service for e in entries if e.service), "")
        config = self._config.current
        resource = self._resource(config, service)
        if entries and not self._access.allows("insight.read", resource):
            await self._access.check(context, "insight.read", resource)  # an audited denial
            entries = []
        if not entries:  # an unknown change and one the caller may not read answer alike
            await context.abort(grpc.StatusCode.NOT_FOUND, f"change_id: no change {change_id!r}")
        reply = pb.ChangeTimelineResponse(change_id=change_id, service=service)
        for e in entries:
            reply.entries.add(
                at=_stamp(e.at),
                kind=e.kind,
                actor=e.actor,
                summary=e.summary,
                status=e.status,
                outcome=e.outcome,
                evaluation_id=e.evaluation_id,
                environment=e.environment,
                version=e.version,
                event_id=e.event_id,
            )
        return reply
