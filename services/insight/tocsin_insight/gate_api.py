"""gRPC DeployGateService: thin handlers over the pure gate (tocsin_common/change/gate.py).

State: open incidents from the serving generation's incident facts, dependencies from the
config, error budget and burn rate from insight's availability computation, ad-hoc freezes
and overrides from PostgreSQL (tables of migration 0002, shared by every replica).
Access: ``gate.evaluate`` (responder) and ``gate.override`` / ``gate.freeze`` (manager) on
the service's team; a freeze of every service: admin. Every decision and override is an
audit record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
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
    evaluate,
    make_override,
    with_override,
)
from tocsin_common.config import ConfigStore, TocsinConfig

from tocsin_insight.domain.availability import Availability, ImpactSlice, availability
from tocsin_insight.gate_state import freeze_of, override_of, state_of
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
    ) -> None:
        self._pool = pool
        self._generation = generation
        self._config = config
        self._access = access
        self._now = now or (lambda: datetime.now(UTC))

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

    async def _decide(self, request: GateRequest) -> Decision:
        config = self._config.current
        now = self._now()
        rules = GateRules.for_request(
            config.change_control, request, [p.id for p in config.insight.priorities]
        )
        generation = await self._generation()
        async with self._pool.connection() as conn:
            incidents: list[Any] = []
            budgets: dict[str, Availability | None] = {}
            if generation:
                schema = generation_schema(generation)
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT incident_id, service_id, urgency, priority, title, status "
                        "FROM {s}.incident_facts WHERE status <> 'resolved'"
                    ).format(s=schema)
                )
                incidents = list(await cur.fetchall())
                budgets = await self._budgets(conn, schema, config, rules, request.service)
            cur = await conn.execute(
                f"SELECT {_FREEZE_COLUMNS} FROM gate_freezes WHERE end_at > %s", (now,)
            )
            freezes = [freeze_of(row) for row in await cur.fetchall()]
            cur = await conn.execute(
                f"SELECT {_OVERRIDE_COLUMNS} FROM gate_overrides WHERE service = %s "
                "AND environment = %s AND version = %s AND expires_at > %s",
                (request.service, request.environment, request.version, now),
            )
            overrides = [override_of(row) for row in await cur.fetchall()]
            state = state_of(config, request.service, incidents, budgets, freezes, overrides)
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
            if decision.evaluated_outcome != "pass":
                await conn.execute(
                    "INSERT INTO gate_decisions (evaluation_id, service, environment, version, "
                    "change_id, evaluated_outcome, dry_run, evaluated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        decision.evaluation_id,
                        decision.service,
                        decision.environment,
                        decision.version,
                        decision.change_id,
                        decision.evaluated_outcome,
                        decision.dry_run,
                        decision.evaluated_at,
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
        decision = await self._decide(gate_request)
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
            decision = await self._decide(GateRequest(service, environment, version, change_id))
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
                f"INSERT INTO gate_overrides ({_OVERRIDE_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
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
