"""Liveness and readiness (no credential: probes carry none)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tocsin_api import models
from tocsin_api.deps import state_of
from tocsin_api.problems import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=models.Health, summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=models.Health,
    summary="Readiness: Redis and escalation answer",
)
async def readyz(request: Request) -> dict[str, str]:
    check = state_of(request).ready
    if check is not None:
        try:
            await check()
        except Exception as e:
            raise Problem(503, f"not ready: {e}", headers={"Retry-After": "1"}) from None
    return {"status": "ready"}
