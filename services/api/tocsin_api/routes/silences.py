"""Silences (Alertmanager matcher syntax) and maintenance windows.

A maintenance window planned in advance lives in the config file (read-only here); one made
on the spot is a silence of one service whose single matcher is ``service="<id>"`` (every
alert of that service) and whose comment starts with ``[maintenance]``: correlation then
records the service's alerts as suppressed, as during a planned window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from tocsin.v1 import silence_service_pb2 as pb
from tocsin_common.auth.directory import service_resource
from tocsin_common.config.model import Matcher
from tocsin_common.maintenance import MAINTENANCE, is_maintenance
from tocsin_common.statuspage.updates import UpdateError, clean_public_title

from tocsin_api import convert, models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, allows, state_of
from tocsin_api.problems import FieldProblem, Problem, invalid

router = APIRouter(prefix="/api/v1", tags=["silences"])

SILENCE_FIELDS = {
    "ends_at": "ends_at",
    "starts_at": "starts_at",
    "service_id": "service_id",
    "comment": "comment",
    "public_title": "public_title",
}


def parse_matchers(texts: list[str]) -> list[pb.Matcher]:
    """Alertmanager matchers (``name=value``, ``name!=value``, ``name=~"re"``,
    ``name!~"re"``); a 400 naming each one that does not parse."""
    out: list[pb.Matcher] = []
    errors: list[FieldProblem] = []
    for index, text in enumerate(texts):
        try:
            matcher = Matcher.model_validate(text)
        except ValidationError as error:
            problem = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
            errors.append(FieldProblem(f"matchers[{index}]", problem))
            continue
        out.append(
            pb.Matcher(name=matcher.name, value=matcher.value, op=convert.OP_VALUES[matcher.op])
        )
    if errors:
        raise Problem(400, "; ".join(f"{e.field}: {e.problem}" for e in errors), errors)
    return out


def _window(
    starts_at: datetime | None, ends_at: datetime | None, duration_seconds: int | None
) -> tuple[datetime, datetime]:
    if (ends_at is None) == (duration_seconds is None):
        raise invalid("ends_at", "give exactly one of ends_at or duration_seconds")
    start = starts_at or datetime.now(UTC)
    end = ends_at or start + timedelta(seconds=min(duration_seconds or 0, 10**9))
    return start, end


async def _create(
    request: Request,
    caller: Caller,
    service_id: str,
    matchers: list[pb.Matcher],
    start: datetime,
    end: datetime,
    comment: str,
    public_title: str = "",
) -> pb.Silence:
    silence = pb.Silence(
        service_id=service_id, matchers=matchers, comment=comment, public_title=public_title
    )
    silence.starts_at.FromDatetime(start.astimezone(UTC))
    silence.ends_at.FromDatetime(end.astimezone(UTC))
    stub = state_of(request).backends.silences
    created = await call(
        stub.CreateSilence,
        pb.CreateSilenceRequest(silence=silence),
        caller.credential,
        SILENCE_FIELDS,
    )
    silence.silence_id = created.silence_id
    silence.created_by = caller.principal.id
    return silence


async def _list(
    request: Request, caller: Caller, service_id: str, expired: bool
) -> list[pb.Silence]:
    found = await call(
        state_of(request).backends.silences.ListSilences,
        pb.ListSilencesRequest(service_id=service_id, include_expired=expired),
        caller.credential,
    )
    return list(found.silences)


@router.get("/silences", response_model=models.Silences, summary="Silences (active by default)")
async def list_silences(
    request: Request,
    caller: Caller = CallerDep,
    service_id: Annotated[str | None, Query(min_length=1)] = None,
    include_expired: bool = False,
) -> dict[str, Any]:
    found = await _list(request, caller, service_id or "", include_expired)
    return {"silences": [convert.silence(s) for s in found]}


@router.post("/silences", status_code=201, response_model=models.Silence, summary="Silence alerts")
async def create_silence(
    body: models.SilenceBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    matchers = parse_matchers(body.matchers)
    start, end = _window(body.starts_at, body.ends_at, body.duration_seconds)
    silence = await _create(
        request, caller, body.service_id or "", matchers, start, end, body.comment
    )
    return convert.silence(silence)


@router.delete(
    "/silences/{silence_id}", status_code=204, response_class=Response, summary="Expire a silence"
)
async def expire_silence(silence_id: str, request: Request, caller: Caller = CallerDep) -> Response:
    await call(
        state_of(request).backends.silences.ExpireSilence,
        pb.ExpireSilenceRequest(silence_id=silence_id),
        caller.credential,
    )
    return Response(status_code=204)


def _runtime_window(silence: pb.Silence) -> dict[str, Any]:
    return {
        "id": silence.silence_id,
        "service_id": silence.service_id,
        "start": convert.ts(silence.starts_at),
        "end": convert.ts(silence.ends_at),
        "description": silence.comment.removeprefix(MAINTENANCE).strip(),
        "public_title": silence.public_title or None,
        "source": "runtime",
    }


@router.get(
    "/maintenance_windows",
    response_model=models.MaintenanceWindows,
    summary="Maintenance windows: planned (config) and made on the spot (runtime)",
)
async def list_windows(
    request: Request,
    caller: Caller = CallerDep,
    service_id: Annotated[str | None, Query(min_length=1)] = None,
) -> dict[str, Any]:
    config = state_of(request).config.current
    planned = [
        {
            "id": None,
            "service_id": s.id,
            "start": convert.iso(w.start),
            "end": convert.iso(w.end),
            "description": w.description,
            # The status page shows a planned window by its description.
            "public_title": w.description.strip() or None,
            "source": "config",
        }
        for s in config.services
        if (not service_id or s.id == service_id)
        and allows(caller, "silence.read", service_resource(config, s.id))
        for w in s.maintenance_windows
    ]
    runtime = [
        _runtime_window(s)
        for s in await _list(request, caller, service_id or "", False)
        if is_maintenance(s)
    ]
    return {"maintenance_windows": planned + runtime}


@router.post(
    "/maintenance_windows",
    status_code=201,
    response_model=models.MaintenanceWindow,
    summary="Start (or plan) a maintenance window of one service now",
)
async def create_window(
    body: models.MaintenanceWindowBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    start, end = _window(body.starts_at, body.ends_at, body.duration_seconds)
    public_title = ""
    redactions: list[str] = []
    if body.public_title is not None:
        try:
            cleaned = clean_public_title(body.public_title)
        except UpdateError as error:
            raise invalid("public_title", str(error).removeprefix("public_title: ")) from None
        public_title, redactions = cleaned.text, list(cleaned.redactions)
    matcher = pb.Matcher(name="service", value=body.service_id, op=pb.Matcher.OP_EQUAL)
    comment = f"{MAINTENANCE} {body.description}".strip()
    silence = await _create(
        request, caller, body.service_id, [matcher], start, end, comment, public_title
    )
    return {**_runtime_window(silence), "redactions": redactions}


@router.delete(
    "/maintenance_windows/{window_id}",
    status_code=204,
    response_class=Response,
    summary="End a maintenance window made at runtime",
)
async def end_window(window_id: str, request: Request, caller: Caller = CallerDep) -> Response:
    found = [s for s in await _list(request, caller, "", True) if s.silence_id == window_id]
    if not found or not is_maintenance(found[0]):
        raise Problem(404, f"window_id: no maintenance window {window_id!r}")
    await call(
        state_of(request).backends.silences.ExpireSilence,
        pb.ExpireSilenceRequest(silence_id=window_id),
        caller.credential,
    )
    return Response(status_code=204)
