"""The deploy gate (insight's DeployGateService): evaluate, ad-hoc freezes, overrides.

``POST /api/v1/deploy-gates/evaluate`` answers the decision as docs/change-control.md shows
it, so an Argo Rollouts ``web`` metric can read ``jsonPath: "{$.outcome}"``. Every call goes
to insight with the caller's credential; insight decides and audits.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import deploy_gate_service_pb2 as pb
from tocsin_common.timeutil import to_timestamp

from tocsin_api import models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, state_of

router = APIRouter(prefix="/api/v1/deploy-gates", tags=["deploy gate"])

# insight's field names -> the API's
RENAME = {"start": "starts_at", "end": "ends_at"}


def _iso(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def decision(reply: pb.GateDecision) -> dict[str, Any]:
    """The JSON of ``Decision.to_dict()`` (tocsin_common/change/gate.py) from the message."""
    override = None
    if reply.HasField("override"):
        o = reply.override
        override = {
            "actor": o.actor,
            "reason": o.reason,
            "created_at": _iso(o.created_at),
            "expires_at": _iso(o.expires_at),
            "overridden_outcome": o.overridden_outcome,
        }
    return {
        "evaluation_id": reply.evaluation_id,
        "service": reply.service,
        "environment": reply.environment,
        "version": reply.version,
        "change_id": reply.change_id,
        "outcome": reply.outcome,
        "passed": reply.outcome != "fail",
        "evaluated_outcome": reply.evaluated_outcome,
        "dry_run": reply.dry_run,
        "rules": [{"rule": r.rule, "outcome": r.outcome, "reason": r.reason} for r in reply.rules],
        "evaluated_at": _iso(reply.evaluated_at),
        "valid_until": _iso(reply.valid_until),
        "override": override,
    }


def freeze(f: pb.GateFreeze) -> dict[str, Any]:
    return {
        "id": f.freeze_id,
        "starts_at": _iso(f.start),
        "ends_at": _iso(f.end),
        "author": f.author,
        "reason": f.reason,
        "services": list(f.services),
        "environments": list(f.environments),
    }


@router.post(
    "/evaluate",
    response_model=models.GateDecision,
    summary="May this version of the service be deployed to the environment now?",
)
async def evaluate(
    body: models.GateEvaluateBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.gate.Evaluate,
        pb.EvaluateGateRequest(
            service=body.service,
            environment=body.environment,
            version=body.version,
            change_id=body.change_id,
            dry_run=body.dry_run,
        ),
        caller.credential,
    )
    return decision(reply)


@router.post(
    "/overrides",
    status_code=201,
    response_model=models.GateDecision,
    summary="Override a failed or warned decision (a manager of the service's team)",
)
async def override(
    body: models.GateOverrideBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.gate.Override,
        pb.OverrideGateRequest(
            evaluation_id=body.evaluation_id,
            service=body.service,
            environment=body.environment,
            version=body.version,
            reason=body.reason,
        ),
        caller.credential,
    )
    return decision(reply)


@router.post(
    "/freezes",
    status_code=201,
    response_model=models.GateFreeze,
    summary="Freeze deploys of some services (or all: admin) until a time, with a reason",
)
async def create_freeze(
    body: models.GateFreezeBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    message = pb.CreateFreezeRequest(
        end=to_timestamp(body.ends_at),
        reason=body.reason,
        services=body.services,
        environments=body.environments,
    )
    if body.starts_at is not None:
        message.start.CopyFrom(to_timestamp(body.starts_at))
    reply = await call(
        state_of(request).backends.gate.CreateFreeze, message, caller.credential, RENAME
    )
    return freeze(reply)


@router.get("/freezes", response_model=models.GateFreezes, summary="Current ad-hoc freezes")
async def list_freezes(
    request: Request, caller: Caller = CallerDep, include_past: bool = False
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.gate.ListFreezes,
        pb.ListFreezesRequest(include_past=include_past),
        caller.credential,
    )
    return {"freezes": [freeze(f) for f in reply.freezes]}


@router.delete(
    "/freezes/{freeze_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an ad-hoc freeze",
)
async def delete_freeze(freeze_id: str, request: Request, caller: Caller = CallerDep) -> Response:
    await call(
        state_of(request).backends.gate.DeleteFreeze,
        pb.DeleteFreezeRequest(freeze_id=freeze_id),
        caller.credential,
    )
    return Response(status_code=204)
