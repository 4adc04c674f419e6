"""The public status page: ``GET /status`` (HTML, no script) and
``GET /status/api/v2/summary.json`` (Statuspage-shaped JSON). No login: the api reads with
its own service credential (``status_page.read``) and shows only what was posted for the
public. Each replica builds the page at most once per ``CACHE_SECONDS``; answers carry a
strict Content-Security-Policy and ``Cache-Control: public, max-age=CACHE_SECONDS``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from tocsin.v1 import incident_service_pb2, insight_service_pb2, silence_service_pb2
from tocsin_common.auth.directory import service_teams
from tocsin_common.auth.policy import Resource
from tocsin_common.config.status_page import PublicComponent
from tocsin_common.statuspage.components import ComponentOverride
from tocsin_common.statuspage.public import PublicPage, readable_time
from tocsin_common.timeutil import to_timestamp

from tocsin_api import models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, authorize, state_of
from tocsin_api.problems import Problem, invalid
from tocsin_api.status import subscribers
from tocsin_api.status.assemble import INDICATORS, assemble, summary
from tocsin_api.status.overrides import Overrides

log = logging.getLogger("tocsin.api.status")
HERE = Path(__file__).resolve().parent
CACHE_SECONDS = 10
UPTIME_WINDOW = timedelta(days=90)
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": f"public, max-age={CACHE_SECONDS}",
}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["readable_time"] = readable_time


@dataclass
class Cached:
    page: PublicPage
    built: float


class PageCache:
    """The last page built and when (the api's clock); one build at a time."""

    def __init__(self) -> None:
        self.cached: Cached | None = None
        self.lock = asyncio.Lock()


def _cache(request: Request) -> PageCache:
    extra = state_of(request).extra
    found = extra.get("status_page_cache")
    if not isinstance(found, PageCache):
        found = extra["status_page_cache"] = PageCache()
    return found


def page_secret(request: Request) -> bytes:
    """The key of the page's incident ids (derived, never the console secret itself)."""
    secret = state_of(request).console_secret or "tocsin"
    return hashlib.sha256(b"tocsin status page ids\0" + secret.encode()).digest()


async def _uptime(request: Request, services: list[str], now: datetime) -> dict[str, float]:
    state = state_of(request)
    if not services:
        return {}
    try:
        found = await call(
            state.backends.insight.Uptime,
            insight_service_pb2.UptimeRequest(
                service_ids=services,
                since=to_timestamp(now - UPTIME_WINDOW),
                until=to_timestamp(now),
            ),
            state.service_credential(),
        )
    except Problem as problem:  # the page still shows the states without uptime
        log.warning("status page: no uptime from insight: %s", problem.detail)
        return {}
    return {s.service_id: s.availability for s in found.services}


async def _runtime_windows(
    request: Request,
) -> list[silence_service_pb2.PublicMaintenanceWindow]:
    """Correlation's runtime maintenance windows (none shown when it does not answer)."""
    state = state_of(request)
    try:
        found = await call(
            state.backends.silences.StatusMaintenance,
            silence_service_pb2.StatusMaintenanceRequest(),
            state.service_credential(),
        )
    except Problem as problem:  # the page still shows the rest
        log.warning("status page: no runtime maintenance from correlation: %s", problem.detail)
        return []
    return list(found.windows)


async def build(request: Request) -> PublicPage:
    state = state_of(request)
    config = state.config.current
    now = datetime.fromtimestamp(state.clock(), UTC)
    facts = await call(
        state.backends.incidents.StatusPage,
        incident_service_pb2.StatusPageRequest(since=to_timestamp(now - timedelta(days=8))),
        state.service_credential(),
    )
    services = sorted({s for c in config.status_page.components for s in c.services})
    uptime = await _uptime(request, services, now)
    store = state.status_overrides()
    overrides = await store.all() if store is not None else {}
    windows = await _runtime_windows(request)
    return assemble(config, facts, uptime, now, page_secret(request), overrides, windows)


async def current(request: Request) -> PublicPage:
    """The page, built at most once per CACHE_SECONDS per replica."""
    if not state_of(request).config.current.status_page.enabled:
        raise Problem(404, "the status page is not enabled", kind="not-found")
    cache = _cache(request)
    clock = state_of(request).clock
    async with cache.lock:
        cached = cache.cached
        if cached is None or not 0 <= clock() - cached.built < CACHE_SECONDS:
            cached = cache.cached = Cached(await build(request), clock())
        return cached.page


@router.get("/status")
async def status_html(request: Request) -> Response:
    page = await current(request)
    indicator, description = INDICATORS[page.state]
    response = templates.TemplateResponse(
        request,
        "page.html",
        {"page": page, "indicator": indicator, "description": description},
    )
    response.headers.update(HEADERS)
    return response


@router.get("/status/api/v2/summary.json")
async def status_json(request: Request) -> Response:
    page = await current(request)
    url = f"{state_of(request).settings.public_url}/status"
    body: dict[str, Any] = summary(page, url)
    return JSONResponse(body, headers=HEADERS)


# --- responders' overrides of a component's state (authenticated, /api/v1) ---------------

api_router = APIRouter(prefix="/api/v1", tags=["status page"])


def _component(request: Request, component_id: str) -> PublicComponent:
    config = state_of(request).config.current
    if not config.status_page.enabled:
        raise Problem(409, "status_page: the status page is not enabled in the config")
    for component in config.status_page.components:
        if component.id == component_id:
            return component
    raise Problem(404, f"component_id: no component {component_id!r}", kind="not-found")


def _resource(request: Request, component: PublicComponent) -> Resource:
    config = state_of(request).config.current
    teams = frozenset(t for s in component.services for t in service_teams(config, s))
    return Resource("status_component", component.id, teams)


def _store(request: Request) -> Overrides:
    store = state_of(request).status_overrides()
    if store is None:
        raise Problem(503, "the override store is not available")
    return cast(Overrides, store)


def _override_body(component_id: str, override: ComponentOverride) -> dict[str, Any]:
    return {
        "component_id": component_id,
        "state": override.state,
        "actor": override.actor,
        "until": override.until.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if override.until
        else None,
    }


@api_router.put(
    "/status_page/components/{component_id}/override",
    response_model=models.ComponentOverrideOut,
    summary="Override a public component's state (until a time, or until removed)",
)
async def set_override(
    component_id: str,
    body: models.ComponentOverrideBody,
    request: Request,
    caller: Caller = CallerDep,
) -> dict[str, Any]:
    component = _component(request, component_id)
    await authorize(request, caller, "status_page.override", _resource(request, component))
    now = datetime.fromtimestamp(state_of(request).clock(), UTC)
    if body.until is not None and body.until <= now:
        raise invalid("until", "must be in the future")
    override = ComponentOverride(component_id, body.state, caller.principal.id, body.until)
    await _store(request).set(override, now)
    _cache(request).cached = None  # this replica shows it at once; others within 10 s
    return _override_body(component_id, override)


@api_router.delete(
    "/status_page/components/{component_id}/override",
    status_code=204,
    summary="Remove a component's override: its state is derived again",
)
async def remove_override(
    component_id: str, request: Request, caller: Caller = CallerDep
) -> Response:
    component = _component(request, component_id)
    await authorize(request, caller, "status_page.override", _resource(request, component))
    if not await _store(request).remove(component_id):
        raise Problem(404, f"component_id: {component_id!r} has no override", kind="not-found")
    _cache(request).cached = None
    return Response(status_code=204)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(api_router)
    subscribers.install(app)
    app.mount("/status/static", StaticFiles(directory=str(HERE / "static")), name="status-static")
