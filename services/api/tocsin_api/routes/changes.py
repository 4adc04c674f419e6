"""A change's timeline (insight's DeployGateService.ChangeTimeline): its change events and
every deploy-gate decision and override about it (docs/change-control.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from tocsin.v1 import deploy_gate_service_pb2 as pb

from tocsin_api import models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, state_of
from tocsin_api.routes.deploy_gates import _iso

router = APIRouter(prefix="/api/v1/changes", tags=["deploy gate"])


@router.get(
    "/{change_id}/timeline",
    response_model=models.ChangeTimeline,
    summary="A change's history: its events, and the deploy gate's decisions and overrides",
)
async def change_timeline(
    request: Request,
    caller: Caller = CallerDep,
    change_id: str = Path(min_length=1, max_length=255),
) -> dict[str, Any]:
    reply = await call(
        state_of(request).backends.gate.ChangeTimeline,
        pb.ChangeTimelineRequest(change_id=change_id),
        caller.credential,
    )
    return {
        "change_id": reply.change_id,
        "service": reply.service,
        "entries": [
            {
                "at": _iso(e.at),
                "kind": e.kind,
                "actor": e.actor,
                "summary": e.summary,
                "status": e.status,
                "outcome": e.outcome,
                "evaluation_id": e.evaluation_id,
                "environment": e.environment,
                "version": e.version,
                "event_id": e.event_id,
            }
            for e in reply.entries
        ],
    }
