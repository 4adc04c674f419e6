"""An automation rule's dry run (insight's InsightService.AutomationDryRun): how often a
configured rule, or one written as in the config, would have fired over the incidents
insight keeps (docs/automation.md#dry-run). insight decides who may ask
(``automation.dry_run``: a manager of the teams whose incidents it counts)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import insight_service_pb2 as pb
from tocsin_common.timeutil import to_timestamp

from tocsin_api import models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, state_of
from tocsin_api.problems import invalid

router = APIRouter(prefix="/api/v1/automation", tags=["automation"])
# A dry run reads every incident of its window (about 20,000 a second on a loaded machine):
# longer than a plain call's deadline for a long window of a busy service.
DRY_RUN_TIMEOUT_S = 60.0


def _iso(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


@router.post(
    "/dry-run",
    response_model=models.AutomationDryRun,
    summary="How often an automation rule would have fired over past incidents",
)
async def dry_run(
    body: models.AutomationDryRunBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    if bool(body.rule_id) == (body.rule is not None):
        raise invalid("rule_id, rule", "give exactly one (a configured rule's id, or a rule)")
    message = pb.AutomationDryRunRequest(
        rule_id=body.rule_id, rule_json="" if body.rule is None else json.dumps(body.rule)
    )
    if body.since is not None:
        message.since.CopyFrom(to_timestamp(body.since))
    if body.until is not None:
        message.until.CopyFrom(to_timestamp(body.until))
    reply = await call(
        state_of(request).backends.insight.AutomationDryRun,
        message,
        caller.credential,
        deadline_s=DRY_RUN_TIMEOUT_S,
    )
    return {
        "rule_id": reply.rule_id,
        "since": _iso(reply.since),
        "until": _iso(reply.until),
        "fires": reply.fires,
        "incidents": reply.incidents,
        "by_trigger": dict(sorted(reply.by_trigger.items())),
        "sample": list(reply.sample),
        "summary": reply.summary,
        "incidents_read": reply.incidents_read,
        "definition_version": reply.definition_version,
    }
