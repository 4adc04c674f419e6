"""On call now, schedules (rendered final schedule, overrides) and calendar feeds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from tocsin.v1 import oncall_service_pb2
from tocsin_common.auth.directory import principal_for, schedule_resource
from tocsin_common.auth.policy import PrincipalKind, decide
from tocsin_common.timeutil import to_timestamp

from tocsin_api import convert, models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, allows, authorize, state_of
from tocsin_api.feeds import Feed
from tocsin_api.problems import Problem, invalid

router = APIRouter(prefix="/api/v1", tags=["on call"])

DEFAULT_RANGE = timedelta(days=7)
FEED_PAST = timedelta(days=7)
FEED_AHEAD = timedelta(days=90)
POLICY_LOOKUPS_AT_ONCE = 16  # GET /oncalls over every policy: calls in flight at most


async def _who(
    request: Request, caller: Caller, schedule_id: str = "", escalation_policy_id: str = ""
) -> list[dict[str, Any]]:
    req = oncall_service_pb2.WhoIsOnCallRequest()
    if schedule_id:
        req.schedule_id = schedule_id
    else:
        req.escalation_policy_id = escalation_policy_id
    reply = await call(state_of(request).backends.oncall.WhoIsOnCall, req, caller.credential)
    return [convert.oncall(e, escalation_policy_id) for e in reply.entries]


@router.get("/oncalls", response_model=models.OnCalls, summary="Who is on call now")
async def oncalls(
    request: Request,
    caller: Caller = CallerDep,
    schedule_id: Annotated[str | None, Query(min_length=1)] = None,
    escalation_policy_id: Annotated[str | None, Query(min_length=1)] = None,
    user_id: Annotated[str | None, Query(min_length=1)] = None,
) -> dict[str, Any]:
    if schedule_id and escalation_policy_id:
        raise invalid("schedule_id", "give schedule_id or escalation_policy_id, not both")
    if schedule_id:
        found = await _who(request, caller, schedule_id=schedule_id)
    elif escalation_policy_id:
        found = await _who(request, caller, escalation_policy_id=escalation_policy_id)
    else:
        # Every policy the caller may read: one look-up each, side by side.
        config = state_of(request).config.current
        ids = [p.id for p in config.escalation_policies]

        gate = asyncio.Semaphore(POLICY_LOOKUPS_AT_ONCE)

        async def one(policy_id: str) -> list[dict[str, Any]]:
            async with gate:
                try:
                    return await _who(request, caller, escalation_policy_id=policy_id)
                except Problem as problem:
                    if problem.status in (403, 404):
                        return []
                    raise

        found = [e for group in await asyncio.gather(*(one(i) for i in ids)) for e in group]
    if user_id:
        found = [e for e in found if e["user_id"] == user_id]
    return {"oncalls": found}


def _summary(schedule: Any) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "description": schedule.description,
        "team_id": schedule.team,
        "time_zone": schedule.time_zone,
    }


@router.get("/schedules", response_model=models.Schedules, summary="The schedules you may read")
async def schedules(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = state_of(request).config.current
    return {
        "schedules": [
            _summary(s)
            for s in config.schedules
            if allows(caller, "schedule.read", schedule_resource(config, s.id))
        ]
    }


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise invalid(name, "needs a time zone offset (RFC 3339), e.g. 2026-01-01T00:00:00Z")


@router.get(
    "/schedules/{schedule_id}",
    response_model=models.RenderedSchedule,
    summary="A schedule and its final rendered schedule over a range (default: the next 7 days)",
)
async def schedule(
    schedule_id: str,
    request: Request,
    caller: Caller = CallerDep,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
) -> dict[str, Any]:
    _aware("since", since)
    _aware("until", until)
    start = since or datetime.now(UTC)
    end = until or start + DEFAULT_RANGE
    rendered = await call(
        state_of(request).backends.oncall.RenderSchedule,
        oncall_service_pb2.RenderScheduleRequest(
            schedule_id=schedule_id, since=to_timestamp(start), until=to_timestamp(end)
        ),
        caller.credential,
    )
    config = state_of(request).config.current
    try:
        summary = _summary(config.schedule(schedule_id))
    except KeyError:
        raise Problem(404, f"schedule_id: no schedule {schedule_id!r}") from None
    return {
        **summary,
        "since": convert.iso(start),
        "until": convert.iso(end),
        "final_schedule": convert.spans(rendered.spans),
        "layers": [
            {"name": layer.name, "spans": convert.spans(layer.spans)} for layer in rendered.layers
        ],
        "overrides": [convert.override(o) for o in rendered.overrides],
    }


OVERRIDE_FIELDS = {
    "override.user_id": "user_id",
    "override.start": "start",
    "override.end": "end",
    "override": "(body)",
}


@router.post(
    "/schedules/{schedule_id}/overrides",
    status_code=201,
    response_model=models.Override,
    summary="Put someone on call for a while (an override)",
)
async def create_override(
    schedule_id: str, body: models.OverrideBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    created = await call(
        state_of(request).backends.oncall.CreateOverride,
        oncall_service_pb2.CreateOverrideRequest(
            override=oncall_service_pb2.Override(
                schedule_id=schedule_id,
                user_id=body.user_id,
                start=to_timestamp(body.start),
                end=to_timestamp(body.end),
            )
        ),
        caller.credential,
        OVERRIDE_FIELDS,
    )
    return convert.override(created)


@router.delete(
    "/schedules/{schedule_id}/overrides/{override_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an override",
)
async def delete_override(
    schedule_id: str, override_id: str, request: Request, caller: Caller = CallerDep
) -> Response:
    await call(
        state_of(request).backends.oncall.DeleteOverride,
        oncall_service_pb2.DeleteOverrideRequest(schedule_id=schedule_id, override_id=override_id),
        caller.credential,
    )
    return Response(status_code=204)


@router.post(
    "/schedules/{schedule_id}/ical_url",
    status_code=201,
    response_model=models.IcalUrl,
    summary="A secret calendar feed URL of the schedule, for calendar apps (yours alone)",
)
async def ical_url(
    schedule_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    state = state_of(request)
    config = state.config.current
    try:
        config.schedule(schedule_id)
    except KeyError:
        raise Problem(404, f"schedule_id: no schedule {schedule_id!r}") from None
    if caller.principal.kind is PrincipalKind.SERVICE:
        raise Problem(403, "calendar feeds are for people and service accounts")
    await authorize(request, caller, "schedule.read", schedule_resource(config, schedule_id))
    token = await state.feeds().create(
        Feed(caller.principal.id, int(caller.principal.kind), schedule_id)
    )
    return {"url": f"{state.settings.public_url}/api/v1/calendars/{token}.ics"}


@router.get(
    "/calendars/{feed_token}.ics",
    summary="A schedule as iCalendar (the secret is the URL; no credential)",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}}}},
)
async def calendar(feed_token: str, request: Request) -> Response:
    state = state_of(request)
    feed = await state.feeds().find(feed_token)
    gone = Problem(404, "no such calendar feed")
    if feed is None:
        raise gone
    config = state.config.current
    owner = principal_for(config, feed.subject_id, PrincipalKind(feed.subject_kind))
    # The feed reads as its owner may today: a person who lost the role loses the feed.
    if (
        owner is None
        or not decide(owner, "schedule.read", schedule_resource(config, feed.schedule_id)).allowed
    ):
        raise gone
    now = datetime.now(UTC)
    try:
        rendered = await call(
            state.backends.oncall.RenderSchedule,
            oncall_service_pb2.RenderScheduleRequest(
                schedule_id=feed.schedule_id,
                since=to_timestamp(now - FEED_PAST),
                until=to_timestamp(now + FEED_AHEAD),
            ),
            state.service_credential(),
        )
    except Problem as problem:
        if problem.status == 404:
            raise gone from None
        raise
    return Response(rendered.ical, media_type="text/calendar; charset=utf-8")
