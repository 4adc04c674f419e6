"""Incidents: list, get (ETag), timeline, alerts, deliveries; acknowledge, resolve, snooze,
reassign, note, priority, singly and in bulk (If-Match / per-item etags: 412 when stale); and the
live stream as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from tocsin.v1 import incident_pb2, incident_service_pb2, notification_service_pb2
from tocsin_common.auth.access import bearer_metadata
from tocsin_common.timeutil import to_timestamp

from tocsin_api import convert, models, sse
from tocsin_api.backends import call, problem_of
from tocsin_api.deps import Caller, CallerDep, state_of
from tocsin_api.problems import Problem, invalid

router = APIRouter(prefix="/api/v1", tags=["incidents"])

KEEPALIVE_S = 15.0
# How long the stream waits for Watch to refuse a position before it starts answering 200.
FIRST_ANSWER_S = 0.3

LIST_FIELDS = {
    "page_token": "cursor",
    "created_since": "since",
    "created_until": "until",
    "service_ids": "service_id",
    "teams": "team_id",
    "statuses": "status",
    "urgencies": "urgency",
}


def _tag(value: str) -> str:
    return value.strip().removeprefix("W/").strip('"')


def etag_matches(header: str, current: str) -> bool:
    """Whether an If-Match header names the incident's current ETag (``*``: any)."""
    wanted = [_tag(part) for part in header.split(",") if part.strip()]
    return "*" in wanted or _tag(current) in wanted


@router.get(
    "/incidents",
    response_model=models.IncidentList,
    summary="List incidents, newest first",
)
async def list_incidents(
    request: Request,
    caller: Caller = CallerDep,
    status: Annotated[list[models.Status] | None, Query()] = None,
    service_id: Annotated[list[str] | None, Query()] = None,
    team_id: Annotated[list[str] | None, Query()] = None,
    urgency: Annotated[list[models.UrgencyName] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="created at or after (RFC 3339)")] = None,
    until: Annotated[datetime | None, Query(description="created before (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise invalid(name, "needs a time zone offset (RFC 3339), e.g. 2026-01-01T00:00:00Z")
    req = incident_service_pb2.ListIncidentsRequest(
        service_ids=service_id or [],
        statuses=[convert.STATUS_VALUES[s] for s in status or []],
        teams=team_id or [],
        urgencies=[convert.URGENCY_VALUES[u] for u in urgency or []],
        limit=limit,
        page_token=cursor or "",
    )
    if since is not None:
        req.created_since.CopyFrom(to_timestamp(since))
    if until is not None:
        req.created_until.CopyFrom(to_timestamp(until))
    backends = state_of(request).backends
    page = await call(backends.incidents.List, req, caller.credential, LIST_FIELDS)
    return {
        "incidents": [convert.incident(i) for i in page.incidents],
        "next_cursor": page.next_page_token or None,
    }


async def _stream_events(
    request: Request,
    caller: Caller,
    service_ids: list[str],
    position: str,
) -> AsyncIterator[bytes] | Problem:
    """The SSE body, or the Problem Watch answered at once (a position it cannot resume)."""
    backends = state_of(request).backends
    if not position:
        # Anchor "now" before answering 200: Watch takes its own "now" only once escalation
        # gets the call, so an event applied in between (a client acting right after the
        # 200, escalation busy) was missed.
        listed = await call(
            backends.incidents.List,
            incident_service_pb2.ListIncidentsRequest(service_ids=service_ids, limit=1),
            caller.credential,
        )
        position = listed.watch_position
    watch = backends.incidents.Watch(
        incident_service_pb2.WatchRequest(service_ids=service_ids, from_position=position),
        metadata=bearer_metadata(caller.credential),
    )
    iterator = watch.__aiter__()
    first: asyncio.Future[incident_service_pb2.WatchEvent] = asyncio.ensure_future(
        iterator.__anext__()
    )
    done, _ = await asyncio.wait({first}, timeout=FIRST_ANSWER_S)
    if done and first.exception() is not None:
        error = first.exception()
        watch.cancel()
        if isinstance(error, grpc.aio.AioRpcError):
            return problem_of(error, {"from_position": "Last-Event-ID"})
        # The stream ended at once (escalation shutting down): retry elsewhere.
        return Problem(
            503, "the incident stream ended at once; retry", headers={"Retry-After": "1"}
        )

    async def body() -> AsyncIterator[bytes]:
        pending = first
        try:
            yield b": stream open\n\n"
            while True:
                finished, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                if not finished:
                    yield sse.KEEPALIVE
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                except grpc.aio.AioRpcError as e:
                    problem = problem_of(e, {"from_position": "Last-Event-ID"})
                    yield sse.frame("error", problem.body())
                    return
                yield sse.frame("incident", convert.stream_event(event.event), event.position)
                pending = asyncio.ensure_future(iterator.__anext__())
        finally:
            pending.cancel()
            watch.cancel()
            with contextlib.suppress(BaseException):
                await pending

    return body()


@router.get(
    "/incidents/stream",
    summary="Live incident events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: each event `id: <position>`, `event: incident`, "
            "`data: <json>`; reconnect with `Last-Event-ID` to miss nothing",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream(
    request: Request,
    caller: Caller = CallerDep,
    service_id: Annotated[list[str] | None, Query()] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="last_event_id", max_length=200, description="as Last-Event-ID")
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    position = last_event_id or last_event_id_query or ""
    outcome = await _stream_events(request, caller, service_id or [], position)
    if isinstance(outcome, Problem):
        raise outcome
    return StreamingResponse(
        outcome,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _get(request: Request, caller: Caller, incident_id: str) -> incident_pb2.Incident:
    return await call(
        state_of(request).backends.incidents.Get,
        incident_service_pb2.GetIncidentRequest(incident_id=incident_id),
        caller.credential,
    )


@router.get("/incidents/{incident_id}", response_model=models.Incident, summary="One incident")
async def get_incident(
    incident_id: str, request: Request, response: Response, caller: Caller = CallerDep
) -> dict[str, Any]:
    incident = await _get(request, caller, incident_id)
    body = convert.incident(incident)
    response.headers["ETag"] = body["etag"]
    return body


@router.get(
    "/incidents/{incident_id}/log_entries",
    response_model=models.LogEntries,
    summary="The incident's timeline",
)
async def log_entries(
    incident_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    timeline = await call(
        state_of(request).backends.incidents.Timeline,
        incident_service_pb2.TimelineRequest(incident_id=incident_id),
        caller.credential,
    )
    return {"log_entries": [convert.log_entry(e) for e in timeline.events]}


@router.get(
    "/incidents/{incident_id}/alerts", response_model=models.Alerts, summary="The incident's alerts"
)
async def alerts(incident_id: str, request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    timeline = await call(
        state_of(request).backends.incidents.Timeline,
        incident_service_pb2.TimelineRequest(incident_id=incident_id),
        caller.credential,
    )
    return {"alerts": convert.alerts_of(list(timeline.events))}


@router.get(
    "/incidents/{incident_id}/deliveries",
    response_model=models.Deliveries,
    summary="Every page sent for the incident, and what became of it",
)
async def deliveries(
    incident_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    found = await call(
        state_of(request).backends.notification.ListDeliveries,
        notification_service_pb2.ListDeliveriesRequest(incident_id=incident_id),
        caller.credential,
    )
    return {"deliveries": [convert.delivery(s) for s in found.statuses]}


Action = Literal["acknowledge", "resolve", "snooze", "reassign", "note", "priority"]


async def act(
    request: Request,
    caller: Caller,
    incident_id: str,
    action: Action,
    *,
    if_match: str | None = None,
    duration_seconds: int | None = None,
    user_ids: list[str] | None = None,
    escalation_policy_id: str | None = None,
    content: str | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """One action on one incident; a Problem when refused (412 when ``if_match`` is stale)."""
    stubs = state_of(request).backends.incidents
    if if_match is not None:
        current = await _get(request, caller, incident_id)
        if not etag_matches(if_match, convert.etag(current)):
            raise Problem(
                412,
                f"incident {incident_id!r} changed since that ETag was read "
                f"(now {convert.etag(current)}); read it again and decide again",
                kind="stale-etag",
            )
    ref = incident_service_pb2.IncidentRef(incident_id=incident_id)
    if action == "acknowledge":
        accepted = await call(stubs.Acknowledge, ref, caller.credential)
    elif action == "resolve":
        accepted = await call(stubs.Resolve, ref, caller.credential)
    elif action == "snooze":
        if duration_seconds is None:
            raise invalid("duration_seconds", "is required to snooze")
        until = datetime.now(UTC) + timedelta(seconds=min(duration_seconds, 10**9))
        accepted = await call(
            stubs.Snooze,
            incident_service_pb2.SnoozeRequest(incident_id=incident_id, until=to_timestamp(until)),
            caller.credential,
            {"until": "duration_seconds"},
        )
    elif action == "reassign":
        if bool(user_ids) == bool(escalation_policy_id):
            raise invalid(
                "user_ids", "give exactly one of user_ids (one person) or escalation_policy_id"
            )
        accepted = await call(
            stubs.Reassign,
            incident_service_pb2.ReassignRequest(
                incident_id=incident_id,
                user_id=user_ids[0] if user_ids else "",
                escalation_policy_id=escalation_policy_id or "",
            ),
            caller.credential,
            {"user_id": "user_ids"},
        )
    elif action == "priority":
        accepted = await call(
            stubs.SetPriority,
            incident_service_pb2.SetPriorityRequest(
                incident_id=incident_id, priority=priority or ""
            ),
            caller.credential,
        )
    else:
        accepted = await call(
            stubs.AddNote,
            incident_service_pb2.AddNoteRequest(incident_id=incident_id, text=content or ""),
            caller.credential,
            {"text": "content"},
        )
    return {"incident_id": incident_id, "command_id": accepted.command_id}


IfMatch = Annotated[
    str | None,
    Header(max_length=1000, description="the ETag read: 412 when the incident changed since"),
]
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"description": "the command is accepted"}}


@router.post(
    "/incidents/{incident_id}/acknowledge",
    status_code=202,
    response_model=models.Accepted,
    summary="Acknowledge an incident",
)
async def acknowledge(
    incident_id: str, request: Request, caller: Caller = CallerDep, if_match: IfMatch = None
) -> dict[str, Any]:
    return await act(request, caller, incident_id, "acknowledge", if_match=if_match)


@router.post(
    "/incidents/{incident_id}/resolve",
    status_code=202,
    response_model=models.Accepted,
    summary="Resolve an incident",
)
async def resolve(
    incident_id: str, request: Request, caller: Caller = CallerDep, if_match: IfMatch = None
) -> dict[str, Any]:
    return await act(request, caller, incident_id, "resolve", if_match=if_match)


@router.post(
    "/incidents/{incident_id}/snooze",
    status_code=202,
    response_model=models.Accepted,
    summary="Snooze an incident",
)
async def snooze(
    incident_id: str,
    body: models.SnoozeBody,
    request: Request,
    caller: Caller = CallerDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return await act(
        request,
        caller,
        incident_id,
        "snooze",
        if_match=if_match,
        duration_seconds=body.duration_seconds,
    )


@router.post(
    "/incidents/{incident_id}/reassign",
    status_code=202,
    response_model=models.Accepted,
    summary="Reassign an incident to one person or an escalation policy",
)
async def reassign(
    incident_id: str,
    body: models.ReassignBody,
    request: Request,
    caller: Caller = CallerDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return await act(
        request,
        caller,
        incident_id,
        "reassign",
        if_match=if_match,
        user_ids=body.user_ids,
        escalation_policy_id=body.escalation_policy_id,
    )


@router.post(
    "/incidents/{incident_id}/notes",
    status_code=202,
    response_model=models.Accepted,
    summary="Add a note to an incident's timeline",
)
async def note(
    incident_id: str,
    body: models.NoteBody,
    request: Request,
    caller: Caller = CallerDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return await act(request, caller, incident_id, "note", if_match=if_match, content=body.content)


@router.post(
    "/incidents/{incident_id}/priority",
    status_code=202,
    response_model=models.Accepted,
    summary="Set an incident's priority",
)
async def set_priority(
    incident_id: str,
    body: models.PriorityBody,
    request: Request,
    caller: Caller = CallerDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return await act(
        request, caller, incident_id, "priority", if_match=if_match, priority=body.priority
    )


@router.post(
    "/incidents/{incident_id}/status_updates",
    status_code=202,
    response_model=models.StatusUpdatePosted,
    summary="Post a status update for the public status page (docs/status-page.md)",
)
async def status_update(
    incident_id: str,
    body: models.StatusUpdateBody,
    request: Request,
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    return await post_status_update(request, caller, incident_id, body)


async def post_status_update(
    request: Request, caller: Caller, incident_id: str, body: models.StatusUpdateBody
) -> dict[str, Any]:
    """A status update, as the caller; what the public will read (a Problem when refused)."""
    posted = await call(
        state_of(request).backends.incidents.PostStatusUpdate,
        incident_service_pb2.PostStatusUpdateRequest(
            incident_id=incident_id,
            status=body.status,
            message=body.message,
            public_title=body.public_title or "",
        ),
        caller.credential,
    )
    return {
        "incident_id": incident_id,
        "command_id": posted.command_id,
        "status": posted.update.status,
        "message": posted.update.message,
        "public_title": posted.update.public_title,
        "redactions": list(posted.redactions),
    }


@router.put(
    "/incidents/{incident_id}/impact",
    status_code=202,
    response_model=models.ImpactSet,
    summary="Set (or clear) an incident's public impact on the status page",
)
async def set_impact(
    incident_id: str,
    body: models.ImpactBody,
    request: Request,
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    return await put_impact(request, caller, incident_id, body.impact)


async def put_impact(
    request: Request, caller: Caller, incident_id: str, impact: str | None
) -> dict[str, Any]:
    """The incident's public impact set as the caller (None clears it); a Problem when
    refused."""
    accepted = await call(
        state_of(request).backends.incidents.SetImpact,
        incident_service_pb2.SetImpactRequest(incident_id=incident_id, impact=impact or ""),
        caller.credential,
    )
    return {"incident_id": incident_id, "command_id": accepted.command_id, "impact": impact}


async def decide_automation(
    request: Request,
    caller: Caller,
    incident_id: str,
    rule_id: str,
    verdict: Literal["approve", "reject"],
    reason: str,
) -> dict[str, Any]:
    """A decision on the rule's automation actions that wait on the incident; the caller is
    its actor (notification checks ``automation.approve``)."""
    answer = await call(
        state_of(request).backends.notification.DecideAutomation,
        notification_service_pb2.DecideAutomationRequest(
            incident_id=incident_id, rule_id=rule_id, verdict=verdict, reason=reason
        ),
        caller.credential,
    )

    return {"approvals": [approval_dict(a) for a in answer.approvals]}


def approval_dict(a: notification_service_pb2.AutomationApproval) -> dict[str, Any]:
    def when(name: Literal["requested_at", "expires_at", "decided_at"]) -> datetime | None:
        return getattr(a, name).ToDatetime(tzinfo=UTC) if a.HasField(name) else None

    return {
        "key": a.key,
        "rule_id": a.rule_id,
        "incident_id": a.incident_id,
        "trigger": a.trigger,
        "state": a.state,
        "decided_by": a.decided_by,
        "reason": a.reason,
        "requested_at": when("requested_at"),
        "expires_at": when("expires_at"),
        "decided_at": when("decided_at"),
    }


async def list_approvals(request: Request, caller: Caller, incident_id: str) -> dict[str, Any]:
    answer = await call(
        state_of(request).backends.notification.ListApprovals,
        notification_service_pb2.ListApprovalsRequest(incident_id=incident_id),
        caller.credential,
    )
    return {"approvals": [approval_dict(a) for a in answer.approvals]}


@router.get(
    "/incidents/{incident_id}/automation/approvals",
    response_model=models.AutomationApprovals,
    summary="The incident's automation actions that wait (or waited) for approval, oldest "
    "first",
)
async def approvals(
    incident_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    return await list_approvals(request, caller, incident_id)


DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such incident, or the rule never waited on it"},
    409: {"description": "nothing of the rule waits for approval: decided already or expired"},
}


@router.post(
    "/incidents/{incident_id}/automation/{rule_id}/approve",
    response_model=models.AutomationDecision,
    responses=DECISION_ERRORS,
    summary="Approve the automation rule's actions that wait on an incident; they run now",
)
async def approve_automation(
    incident_id: str,
    rule_id: str,
    request: Request,
    caller: Caller = CallerDep,
    body: models.AutomationDecisionBody | None = None,
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return await decide_automation(request, caller, incident_id, rule_id, "approve", reason)


@router.post(
    "/incidents/{incident_id}/automation/{rule_id}/reject",
    response_model=models.AutomationDecision,
    responses=DECISION_ERRORS,
    summary="Reject the automation rule's actions that wait on an incident; they never run",
)
async def reject_automation(
    incident_id: str,
    rule_id: str,
    request: Request,
    caller: Caller = CallerDep,
    body: models.AutomationDecisionBody | None = None,
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return await decide_automation(request, caller, incident_id, rule_id, "reject", reason)


BULK_CONCURRENCY = 8


@router.post(
    "/incidents/bulk",
    response_model=models.BulkResults,
    summary="One action on many incidents; a result per incident (412 for a stale etag)",
)
async def bulk(
    body: models.BulkBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    if body.action == "snooze" and body.duration_seconds is None:
        raise invalid("duration_seconds", "is required to snooze")
    if body.action == "reassign" and bool(body.user_ids) == bool(body.escalation_policy_id):
        raise invalid(
            "user_ids", "give exactly one of user_ids (one person) or escalation_policy_id"
        )
    gate = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(item: models.BulkItem) -> dict[str, Any]:
        async with gate:
            try:
                accepted = await act(
                    request,
                    caller,
                    item.id,
                    body.action,
                    if_match=item.etag,
                    duration_seconds=body.duration_seconds,
                    user_ids=body.user_ids,
                    escalation_policy_id=body.escalation_policy_id,
                )
            except Problem as problem:
                return {"id": item.id, "status": problem.status, "detail": problem.detail}
            return {"id": item.id, "status": 202, "command_id": accepted["command_id"]}

    return {"results": list(await asyncio.gather(*(one(i) for i in body.incidents)))}
