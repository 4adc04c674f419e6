"""The web console's pages and forms (docs/console.md).

Every page is rendered on the server from the api's own resource functions, called with the
person's :class:`~tocsin_api.deps.Caller` exactly as a REST request would be: the session's
credential is authenticated by the api's Authenticator and forwarded on every gRPC call, so
the services authorise and record the person. Forms POST here with the session's CSRF
token and redirect back (303) with a one-time message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from tocsin.v1 import incident_service_pb2
from tocsin_common.alert_labels import alert_labels
from tocsin_common.auth.directory import incident_resource
from tocsin_common.auth.oidc import OidcError, OidcVerifier
from tocsin_common.auth.oidc_login import (
    AuthorizationRequest,
    authorization_request,
    client_secret,
    code_from_callback,
    exchange_code,
    verified_identity,
)
from tocsin_common.config.model import Matcher, TocsinConfig

from tocsin_api import models
from tocsin_api.backends import call
from tocsin_api.console import views
from tocsin_api.console.security import is_console
from tocsin_api.console.session import (
    LOGIN_COOKIE,
    LOGIN_LIFETIME_S,
    SESSION_COOKIE,
    SESSION_LIFETIME_S,
    FormError,
    Sealer,
    Session,
    csrf_ok,
    derive_key,
    looks_like_token,
    new_session,
    open_session,
    parse_form,
    safe_next,
    seal_session,
)
from tocsin_api.deps import Caller, allows, caller_for, state_of
from tocsin_api.problems import Problem, problem_response
from tocsin_api.routes import admin, analytics, directory, incidents, oncall, silences
from tocsin_api.status import subscribers

log = logging.getLogger("tocsin.api.console")
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["when"] = views.when
templates.env.filters["safe_url"] = views.safe_url
templates.env.filters["duration"] = views.duration
templates.env.filters["percent"] = views.percent
router = APIRouter(prefix="/console", include_in_schema=False)
FLASH_COOKIE = "tocsin_flash"
T = TypeVar("T")


class SignIn(Exception):
    """No valid session: send the person to the sign-in page (then back to ``next``)."""

    def __init__(self, next_path: str, message: str = "") -> None:
        self.next_path = next_path
        self.message = message


class BadForm(Exception):
    """A POST without the session's CSRF token, or not a form: 403/400, nothing done."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


def sealer(request: Request) -> Sealer:
    state = state_of(request)
    cached = state.extra.get("console_sealer")
    if cached is None:
        if not state.console_secret:
            raise Problem(404, "the console is not configured (no console secret)")
        cached = state.extra["console_sealer"] = Sealer(derive_key(state.console_secret))
    assert isinstance(cached, Sealer)
    return cached


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="lax",
    )


@dataclass
class Ctx:
    """The person on this request: who, with what credential, and their CSRF token."""

    caller: Caller
    session: Session
    name: str
    admin: bool


async def context(request: Request) -> Ctx:
    state = state_of(request)
    session = open_session(sealer(request), request.cookies.get(SESSION_COOKIE), state.clock())
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if session is None:
        raise SignIn(here)
    try:
        caller = await caller_for(request, f"Bearer {session.credential}")
    except Problem as problem:
        if problem.status == 401:
            raise SignIn(here, f"Signed out: {problem.detail}") from None
        raise
    config = state.config.current
    try:
        name = config.user(caller.principal.id).name or caller.principal.id
    except KeyError:
        name = caller.principal.id
    return Ctx(caller, session, name, caller.principal.admin)


def page(
    request: Request, ctx: Ctx | None, template: str, status: int = 200, **values: Any
) -> Response:
    flash = None
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        flash = sealer(request).open(FLASH_COOKIE, raw)
    response = templates.TemplateResponse(
        request,
        template,
        {"ctx": ctx, "csrf": ctx.session.csrf if ctx else "", "flash": flash, **values},
        status_code=status,
    )
    if raw:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(request: Request, to: str, flash: views.Flash | None = None) -> Response:
    response = RedirectResponse(to, status_code=303)
    if flash is not None:
        sealed = sealer(request).seal(
            FLASH_COOKIE, {"kind": flash.kind, "text": flash.text, "extra": flash.extra}
        )
        set_cookie(response, request, FLASH_COOKIE, sealed, 60)
    return response


async def form_of(request: Request, ctx: Ctx) -> dict[str, list[str]]:
    """The POSTed form, once its CSRF token is checked against the session's."""
    try:
        fields = parse_form(await request.body(), request.headers.get("content-type", ""))
    except FormError as e:
        raise BadForm(400, str(e)) from None
    if not csrf_ok(ctx.session.csrf, one(fields, "csrf") or None):
        raise BadForm(403, "the form's CSRF token is missing or not this session's; reload")
    return fields


def one(fields: Mapping[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0].strip()


def pydantic_problem(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(form)'}: {e['msg']}" for e in error.errors()
    )


async def attempt(
    request: Request, back: str, done: str, action: Callable[[], Awaitable[Any]]
) -> Response:
    """Run a form's action; back to ``back`` with ``done`` or with why it was refused."""
    try:
        result = await action()
    except Problem as problem:
        return redirect(request, back, views.Flash("error", f"{problem.status}: {problem.detail}"))
    except views.FormProblem as problem:
        return redirect(request, back, views.Flash("error", str(problem)))
    except ValidationError as error:
        return redirect(request, back, views.Flash("error", pydantic_problem(error)))
    if isinstance(result, views.Flash):
        return redirect(request, back, result)
    return redirect(request, back, views.Flash("ok", done))


async def soft(coro: Awaitable[T]) -> T | Problem:
    """A section of a page: its data, or the Problem to show in its place."""
    try:
        return await coro
    except Problem as problem:
        return problem


# ---------------------------------------------------------------------------------------------
# Signing in and out
# ---------------------------------------------------------------------------------------------


def _oidc(request: Request) -> Any:
    return state_of(request).config.current.access.oidc


def _login_page(request: Request, message: str = "", status: int = 200) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    login_csrf = secrets.token_urlsafe(24)
    response = page(
        request,
        None,
        "login.html",
        status=status,
        message=message,
        next_path=next_path,
        oidc=_oidc(request) is not None,
        login_csrf=login_csrf,
    )
    set_cookie(
        response,
        request,
        LOGIN_COOKIE,
        sealer(request).seal(LOGIN_COOKIE, {"csrf": login_csrf}),
        LOGIN_LIFETIME_S,
    )
    return response


@router.get("/login")
async def login(request: Request) -> Response:
    return _login_page(request)


def _start_session(request: Request, credential: str, kind: str, next_path: str) -> Response:
    state = state_of(request)
    session = new_session(credential, kind, state.clock(), SESSION_LIFETIME_S)
    response = RedirectResponse(safe_next(next_path), status_code=303)
    set_cookie(
        response,
        request,
        SESSION_COOKIE,
        seal_session(sealer(request), session),
        SESSION_LIFETIME_S,
    )
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/login")
async def login_with_token(request: Request) -> Response:
    """Sign in with a pasted API token (local use): checked by the Authenticator first."""
    try:
        fields = parse_form(await request.body(), request.headers.get("content-type", ""))
    except FormError as e:
        return _login_page(request, str(e), 400)
    pending = sealer(request).open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE, "")) or {}
    if not csrf_ok(str(pending.get("csrf", "")), one(fields, "csrf") or None):
        return _login_page(request, "The sign-in form expired; try again.", 403)
    token = one(fields, "token")
    if not looks_like_token(token):
        return _login_page(request, "token: paste an API token (it starts with tocsin_)", 400)
    try:
        await caller_for(request, f"Bearer {token}")
    except Problem as problem:
        return _login_page(request, f"token: {problem.detail}", 401)
    return _start_session(request, token, "token", one(fields, "next"))


@router.get("/auth/oidc")
async def oidc_start(request: Request) -> Response:
    """Authorization code + PKCE: the login's state, nonce and verifier go in a sealed
    cookie; the person goes to the provider."""
    settings = _oidc(request)
    if settings is None:
        return _login_page(request, "OpenID Connect is not configured here", 404)
    try:
        metadata = await _verifier(request).metadata()
        auth = authorization_request(
            metadata,
            client_id=settings.client_id,
            redirect_uri=_callback_url(request),
            scopes=settings.scopes,
        )
    except OidcError as e:
        return _login_page(request, f"The identity provider cannot be reached: {e}", 502)
    pending = {
        "state": auth.state,
        "nonce": auth.nonce,
        "verifier": auth.code_verifier,
        "next": safe_next(request.query_params.get("next")),
    }
    response = RedirectResponse(auth.url, status_code=303)
    set_cookie(
        response,
        request,
        LOGIN_COOKIE,
        sealer(request).seal(LOGIN_COOKIE, pending),
        LOGIN_LIFETIME_S,
    )
    return response


def _callback_url(request: Request) -> str:
    return f"{state_of(request).settings.public_url}/console/auth/callback"


def _verifier(request: Request) -> OidcVerifier:
    settings = _oidc(request)
    state = state_of(request)
    cached = state.extra.get("console_oidc")
    if not isinstance(cached, OidcVerifier) or cached.settings != settings:
        cached = state.extra["console_oidc"] = OidcVerifier(settings)
    return cached


@router.get("/auth/callback")
async def oidc_callback(request: Request) -> Response:
    settings = _oidc(request)
    pending = sealer(request).open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE, ""))
    if settings is None or pending is None or "state" not in pending:
        return _login_page(request, "That sign-in expired or was not started here; try again.", 400)
    auth = AuthorizationRequest(
        url="",
        redirect_uri=_callback_url(request),
        state=str(pending["state"]),
        nonce=str(pending["nonce"]),
        code_verifier=str(pending["verifier"]),
    )
    try:
        code = code_from_callback(auth, str(request.url))
        verifier = _verifier(request)
        tokens = await exchange_code(
            await verifier.metadata(),
            auth,
            code,
            client_id=settings.client_id,
            client_secret=client_secret(settings),
        )
        await verified_identity(verifier, tokens, auth.nonce)
    except OidcError as e:
        return _login_page(request, f"Sign-in failed: {e}", 400)
    try:
        await caller_for(request, f"Bearer {tokens.id_token}")
    except Problem as problem:
        return _login_page(request, f"Sign-in refused: {problem.detail}", 403)
    return _start_session(request, tokens.id_token, "oidc", str(pending.get("next", "")))


@router.post("/logout")
async def logout(request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)
    response = redirect(request, "/console/login", views.Flash("ok", "Signed out"))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------------------
# Incidents
# ---------------------------------------------------------------------------------------------


def _neighbours(config: TocsinConfig, service_id: str) -> list[str]:
    """The services ``service_id`` depends on, and those that depend on it."""
    out: list[str] = []
    for s in config.services:
        if s.id == service_id:
            out.extend(s.depends_on)
        elif service_id in s.depends_on:
            out.append(s.id)
    return sorted(set(out) - {service_id})


def _names(config: TocsinConfig) -> dict[str, str]:
    return {u.id: u.name or u.id for u in config.users}


@router.get("/")
async def incident_list(request: Request) -> Response:
    ctx = await context(request)
    params = {k: request.query_params.getlist(k) for k in request.query_params}
    if "f" not in params and "status" not in params:
        params["status"] = ["triggered", "acknowledged"]  # what needs someone, by default
    try:
        chosen = views.parse_filter(params)
        sort = request.query_params.get("sort", "newest")
        views.sort_incidents([], sort)
    except views.FormProblem as problem:
        return page(request, ctx, "error.html", 400, title="Incidents", problem=str(problem))
    since = datetime.now(UTC) - timedelta(hours=chosen.since_hours) if chosen.since_hours else None

    async def fetch(statuses: list[Any] | None) -> dict[str, Any]:
        return await incidents.list_incidents(
            request,
            ctx.caller,
            status=statuses,
            service_id=[chosen.service_id] if chosen.service_id else None,
            team_id=[chosen.team_id] if chosen.team_id else None,
            urgency=[chosen.urgency] if chosen.urgency else None,  # type: ignore[list-item]
            since=since,
            limit=100,
        )

    try:
        listed, everything, people = await asyncio.gather(
            fetch(list(chosen.statuses) or None),
            fetch(None),
            soft(directory.users(request, ctx.caller)),
        )
    except Problem as problem:
        return page(
            request, ctx, "error.html", problem.status, title="Incidents", problem=problem.detail
        )
    shown = [i for i in listed["incidents"] if views.matches_text(i, chosen.text)]
    config = state_of(request).config.current
    return page(
        request,
        ctx,
        "incidents.html",
        incidents=views.sort_incidents(shown, sort),
        counts=views.status_counts(everything["incidents"]),
        people=people,
        more=bool(everything["next_cursor"]),
        chosen=chosen,
        sort=sort,
        sorts=list(views.SORTS),
        statuses=views.STATUSES,
        services=[s.id for s in config.services],
        teams=[t.id for t in config.teams],
        query=urlencode(chosen.query()),
    )


@router.get("/stream")
async def stream(request: Request) -> Response:
    """The live list's Server-Sent Events: the api's stream, with the session's caller
    (EventSource sends Last-Event-ID itself when it reconnects)."""
    try:
        ctx = await context(request)
    except SignIn:
        return Response("sign in again", status_code=401, media_type="text/plain")
    position = request.headers.get("last-event-id", "")[:200]
    outcome = await incidents._stream_events(request, ctx.caller, [], position)
    if isinstance(outcome, Problem):
        return Response(outcome.detail, status_code=outcome.status, media_type="text/plain")
    return StreamingResponse(
        outcome,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/incidents/bulk")
async def incident_bulk(request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)
    back = safe_next(one(fields, "back"), "/console/")
    action = one(fields, "action")
    ids = fields.get("id") or []

    async def run() -> views.Flash:
        if not ids:
            raise views.FormProblem("id", "select at least one incident")
        extra: dict[str, Any] = {}
        if action == "snooze":
            extra["duration_seconds"] = views.parse_minutes(
                "minutes", one(fields, "minutes"), 7 * 24 * 60
            )
        if action == "reassign":
            extra["user_ids"] = [one(fields, "user_id")] if one(fields, "user_id") else None
        body = models.BulkBody(
            action=action,  # type: ignore[arg-type]
            incidents=[models.BulkItem(id=i, etag=one(fields, f"etag-{i}") or None) for i in ids],
            **extra,
        )
        answer = await incidents.bulk(body, request, ctx.caller)
        return views.bulk_summary(action, answer["results"])

    return await attempt(request, back, "", run)


@router.get("/incidents/{incident_id}")
async def incident_page(incident_id: str, request: Request) -> Response:
    ctx = await context(request)
    try:
        incident = await incidents.get_incident(incident_id, request, Response(), ctx.caller)
    except Problem as problem:
        return page(
            request, ctx, "error.html", problem.status, title="Incident", problem=problem.detail
        )
    config = state_of(request).config.current
    neighbours = _neighbours(config, incident["service_id"])
    entries, alerts, deliveries, waiting, people, nearby = await asyncio.gather(
        soft(incidents.log_entries(incident_id, request, ctx.caller)),
        soft(incidents.alerts(incident_id, request, ctx.caller)),
        soft(incidents.deliveries(incident_id, request, ctx.caller)),
        soft(incidents.list_approvals(request, ctx.caller, incident_id)),
        soft(directory.users(request, ctx.caller)),
        soft(
            incidents.list_incidents(
                request, ctx.caller, service_id=[incident["service_id"], *neighbours], limit=100
            )
        ),
    )
    again: list[Any] = []
    around: list[Any] = []
    if isinstance(nearby, dict):
        again = views.recurring(incident, nearby["incidents"])
        around = views.related(incident, nearby["incidents"], neighbours, again)
    past = None
    at_text = request.query_params.get("at", "").strip()
    if at_text and isinstance(entries, dict):
        try:
            past = views.as_of(entries["log_entries"], views.parse_instant("at", at_text))
        except views.FormProblem as problem:
            return page(
                request, ctx, "error.html", 400, title=incident["title"], problem=str(problem)
            )
    return page(
        request,
        ctx,
        "incident.html",
        past=past,
        at_text=at_text,
        recurring=again,
        related=around,
        incident=incident,
        entries=entries,
        alerts=alerts,
        deliveries=deliveries,
        approvals=(
            {"approvals": views.approval_rows(waiting["approvals"])}
            if isinstance(waiting, dict)
            else waiting
        ),
        # Approve/Reject buttons only for who may decide (notification decides again).
        can_approve=allows(
            ctx.caller,
            "automation.approve",
            incident_resource(config, incident_id, incident["service_id"]),
        ),
        people=people,
        policies=[p.id for p in config.escalation_policies],
        names=_names(config),
        status_page=config.status_page if config.status_page.enabled else None,
        public_updates=views.public_updates(entries),
    )


ACTIONS = ("acknowledge", "resolve", "snooze", "reassign", "note", "status_update")


@router.post("/incidents/{incident_id}/automation/{rule_id}/{verdict}")
async def automation_decision(
    incident_id: str, rule_id: str, verdict: str, request: Request
) -> Response:
    """Approve or reject the rule's automation actions that wait on the incident, as the
    signed-in person (the api's decision route: notification checks automation.approve)."""
    ctx = await context(request)
    fields = await form_of(request, ctx)
    back = f"/console/incidents/{incident_id}"
    if verdict not in ("approve", "reject"):
        return page(
            request, ctx, "error.html", 404, title="Incident", problem=f"no action {verdict!r}"
        )

    async def run() -> views.Flash:
        body = models.AutomationDecisionBody(reason=one(fields, "reason"))
        decided = await incidents.decide_automation(
            request,
            ctx.caller,
            incident_id,
            rule_id,
            "approve" if verdict == "approve" else "reject",
            body.reason,
        )
        return views.decision_flash(rule_id, decided["approvals"])

    return await attempt(request, back, "", run)


@router.post("/incidents/{incident_id}/{action}")
async def incident_action(incident_id: str, action: str, request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)
    back = f"/console/incidents/{incident_id}"
    if action not in ACTIONS:
        return page(
            request, ctx, "error.html", 404, title="Incident", problem=f"no action {action!r}"
        )

    async def run() -> Any:
        if_match = one(fields, "etag") or None
        if action == "snooze":
            seconds = views.parse_minutes("minutes", one(fields, "minutes"), 7 * 24 * 60)
            return await incidents.act(
                request,
                ctx.caller,
                incident_id,
                "snooze",
                if_match=if_match,
                duration_seconds=seconds,
            )
        if action == "reassign":
            body = models.ReassignBody(
                user_ids=[one(fields, "user_id")] if one(fields, "user_id") else None,
                escalation_policy_id=one(fields, "escalation_policy_id") or None,
            )
            return await incidents.act(
                request,
                ctx.caller,
                incident_id,
                "reassign",
                if_match=if_match,
                user_ids=body.user_ids,
                escalation_policy_id=body.escalation_policy_id,
            )
        if action == "status_update":
            body_update = models.StatusUpdateBody.model_validate(
                {
                    "status": one(fields, "status"),
                    "message": one(fields, "message"),
                    "public_title": one(fields, "public_title") or None,
                }
            )
            posted = await incidents.post_status_update(
                request, ctx.caller, incident_id, body_update
            )
            redacted = posted["redactions"]
            return views.Flash(
                "ok",
                f"status update posted ({posted['status']})"
                + (f"; redacted before posting: {', '.join(redacted)}" if redacted else ""),
            )
        if action == "note":
            body_note = models.NoteBody(content=one(fields, "content"))
            return await incidents.act(
                request, ctx.caller, incident_id, "note", content=body_note.content
            )
        return await incidents.act(
            request,
            ctx.caller,
            incident_id,
            "acknowledge" if action == "acknowledge" else "resolve",
            if_match=if_match,
        )

    return await attempt(request, back, f"{action}: accepted", run)


# ---------------------------------------------------------------------------------------------
# On call, schedules, policies, services
# ---------------------------------------------------------------------------------------------


@router.get("/oncall")
async def oncall_now(request: Request) -> Response:
    ctx = await context(request)
    config = state_of(request).config.current
    found = await soft(oncall.oncalls(request, ctx.caller))
    return page(request, ctx, "oncall.html", oncalls=found, names=_names(config))


@router.get("/schedules")
async def schedule_list(request: Request) -> Response:
    ctx = await context(request)
    found = await oncall.schedules(request, ctx.caller)
    return page(request, ctx, "schedules.html", schedules=found["schedules"])


@router.get("/schedules/{schedule_id}")
async def schedule_page(schedule_id: str, request: Request) -> Response:
    ctx = await context(request)
    try:
        since, until = views.schedule_range(
            request.query_params.get("since", ""),
            request.query_params.get("days", ""),
            datetime.now(UTC),
        )
        rendered = await oncall.schedule(schedule_id, request, ctx.caller, since=since, until=until)
    except views.FormProblem as problem:
        return page(request, ctx, "error.html", 400, title="Schedule", problem=str(problem))
    except Problem as problem:
        return page(
            request, ctx, "error.html", problem.status, title="Schedule", problem=problem.detail
        )
    config = state_of(request).config.current
    people = await soft(directory.users(request, ctx.caller))
    return page(
        request,
        ctx,
        "schedule.html",
        schedule=rendered,
        days_shown=views.calendar(rendered, _names(config), since, until),
        overrides=views.override_rows(rendered, _names(config)),
        hours=range(0, 24, 3),
        since=since.date().isoformat(),
        days=(until - since).days,
        prev=(since - (until - since)).date().isoformat(),
        next=until.date().isoformat(),
        people=people,
        now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
        later=(datetime.now(UTC) + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M"),
    )


def _schedule_back(schedule_id: str, fields: Mapping[str, list[str]]) -> str:
    """The schedule page showing the range the form was sent from."""
    shown = {k: one(fields, k) for k in ("since", "days") if one(fields, k)}
    return f"/console/schedules/{schedule_id}" + (f"?{urlencode(shown)}" if shown else "")


@router.post("/schedules/{schedule_id}/overrides")
async def override_create(schedule_id: str, request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)
    back = _schedule_back(schedule_id, fields)

    async def run() -> views.Flash:
        body = models.OverrideBody(
            user_id=one(fields, "user_id"),
            start=views.parse_instant("start", one(fields, "start")),
            end=views.parse_instant("end", one(fields, "end")),
        )
        made = await oncall.create_override(schedule_id, body, request, ctx.caller)
        return views.Flash(
            "ok",
            f"Override {made['id']} added: {made['user_id']} on call",
            {"override": made["id"]},
        )

    return await attempt(request, back, "", run)


@router.post("/schedules/{schedule_id}/overrides/delete")
async def override_delete(schedule_id: str, request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)

    async def run() -> None:
        override_id = one(fields, "override_id")
        if not override_id:
            raise views.FormProblem("override_id", "is required")
        await oncall.delete_override(schedule_id, override_id, request, ctx.caller)

    return await attempt(request, _schedule_back(schedule_id, fields), "Override deleted", run)


@router.post("/schedules/{schedule_id}/ical")
async def schedule_ical(schedule_id: str, request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)

    async def run() -> views.Flash:
        made = await oncall.ical_url(schedule_id, request, ctx.caller)
        return views.Flash("ok", "Your calendar feed (keep it secret):", {"url": made["url"]})

    return await attempt(request, f"/console/schedules/{schedule_id}", "", run)


@router.get("/policies")
async def policy_list(request: Request) -> Response:
    ctx = await context(request)
    found = await directory.policies(request, ctx.caller)
    config = state_of(request).config.current
    return page(
        request, ctx, "policies.html", policies=found["escalation_policies"], names=_names(config)
    )


@router.get("/services")
async def service_list(request: Request) -> Response:
    ctx = await context(request)
    found = (await directory.services(request, ctx.caller))["services"]
    beats = await asyncio.gather(
        *(soft(directory.heartbeats(s["id"], request, ctx.caller)) for s in found)
    )
    windows = await soft(silences.list_windows(request, ctx.caller))
    return page(
        request,
        ctx,
        "services.html",
        services=list(zip(found, beats, strict=True)),
        windows=windows,
    )


# ---------------------------------------------------------------------------------------------
# Silences
# ---------------------------------------------------------------------------------------------


async def _silences_page(
    request: Request, ctx: Ctx, expired: bool = False, **values: Any
) -> Response:
    found = await soft(silences.list_silences(request, ctx.caller, include_expired=expired))
    config = state_of(request).config.current
    return page(
        request,
        ctx,
        "silences.html",
        silences=found,
        expired=expired,
        services=[s.id for s in config.services],
        **values,
    )


@router.get("/silences")
async def silence_list(request: Request) -> Response:
    ctx = await context(request)
    return await _silences_page(request, ctx, request.query_params.get("expired") == "1")


PREVIEW_INCIDENTS = 50


@router.post("/silences/preview")
async def silence_preview(request: Request) -> Response:
    """What a silence would mute now: the alerts of the newest open incidents (at most
    50) that its matchers match, by the label sets correlation matches (nothing is made)."""
    ctx = await context(request)
    fields = await form_of(request, ctx)
    typed = {k: one(fields, k) for k in ("matchers", "service_id", "minutes", "comment")}
    try:
        texts = views.parse_matcher_lines(typed["matchers"])
        matchers = [Matcher.model_validate(t) for t in texts]
    except views.FormProblem as problem:
        return await _silences_page(request, ctx, typed=typed, preview_error=str(problem))
    except ValidationError as error:
        return await _silences_page(
            request, ctx, typed=typed, preview_error=f"matchers: {pydantic_problem(error)}"
        )
    service_id = typed["service_id"]
    open_now = await incidents.list_incidents(
        request,
        ctx.caller,
        status=["triggered", "acknowledged"],
        service_id=[service_id] if service_id else None,
        limit=PREVIEW_INCIDENTS,
    )
    stub = state_of(request).backends.incidents

    async def alerts_of(
        incident: dict[str, Any],
    ) -> list[tuple[dict[str, Any], str, dict[str, str]]]:
        timeline = await call(
            stub.Timeline,
            incident_service_pb2.TimelineRequest(incident_id=incident["id"]),
            ctx.caller.credential,
        )
        latest = {}
        for event in timeline.events:
            if event.HasField("alert") and event.alert.event_id:
                latest[event.alert.dedup_key or event.alert.event_id] = event.alert
        return [(incident, a.summary or a.dedup_key, alert_labels(a)) for a in latest.values()]

    groups = await asyncio.gather(*(alerts_of(i) for i in open_now["incidents"]))
    matched = views.preview_matches(matchers, service_id, [a for g in groups for a in g])
    return await _silences_page(
        request,
        ctx,
        typed=typed,
        preview=matched,
        preview_of=len(open_now["incidents"]),
    )


@router.post("/silences")
async def silence_create(request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)

    async def run() -> views.Flash:
        body = models.SilenceBody(
            matchers=views.parse_matcher_lines(one(fields, "matchers")),
            service_id=one(fields, "service_id") or None,
            duration_seconds=views.parse_minutes("minutes", one(fields, "minutes"), 90 * 24 * 60),
            comment=one(fields, "comment"),
        )
        made = await silences.create_silence(body, request, ctx.caller)
        return views.Flash("ok", f"Silence {made['id']} created")

    return await attempt(request, "/console/silences", "", run)


@router.post("/silences/{silence_id}/expire")
async def silence_expire(silence_id: str, request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)

    async def run() -> None:
        await silences.expire_silence(silence_id, request, ctx.caller)

    return await attempt(request, "/console/silences", f"Silence {silence_id} expired", run)


# ---------------------------------------------------------------------------------------------
# The status page's subscribers
# ---------------------------------------------------------------------------------------------


@router.get("/subscribers")
async def subscriber_list(request: Request) -> Response:
    """The status page's subscriptions the caller manages, and a form to add one (the
    REST routes' rules: a manager of a team owning a component's service, admin for every
    component; e-mail double opt-in)."""
    ctx = await context(request)
    found = await soft(subscribers.list_subscriptions(request, ctx.caller))
    page_config = state_of(request).config.current.status_page
    return page(
        request,
        ctx,
        "subscribers.html",
        subscriptions=found,
        enabled=page_config.enabled,
        components=[
            (c.id, f"{c.group} · {c.name}" if c.group else c.name) for c in page_config.components
        ],
    )


@router.post("/subscribers")
async def subscriber_create(request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)

    async def run() -> views.Flash:
        body = models.SubscriptionBody(
            kind=one(fields, "kind"),  # type: ignore[arg-type]  # validated by the model
            address=one(fields, "address").strip(),
            components=[c for c in fields.get("components", []) if c],
        )
        made = await subscribers.create_subscription(body, request, ctx.caller)
        if made["state"] == "pending":
            return views.Flash(
                "ok", f"{made['address']} subscribed: a confirmation e-mail is on its way"
            )
        return views.Flash("ok", f"{made['address']} subscribed")

    return await attempt(request, "/console/subscribers", "", run)


@router.post("/subscribers/{subscription_id}/delete")
async def subscriber_delete(subscription_id: str, request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)

    async def run() -> None:
        await subscribers.delete_subscription(subscription_id, request, ctx.caller)

    return await attempt(request, "/console/subscribers", "Subscription deleted", run)


# ---------------------------------------------------------------------------------------------
# Me and audit
# ---------------------------------------------------------------------------------------------


@router.get("/me")
async def me_page(request: Request) -> Response:
    ctx = await context(request)
    who = await directory.me(request, ctx.caller)
    person = who["user"]
    methods: Any = None
    rules: Any = None
    if person is not None:
        methods, rules = await asyncio.gather(
            soft(directory.contact_methods(who["id"], request, ctx.caller)),
            soft(directory.notification_rules(who["id"], request, ctx.caller)),
        )
    tokens = await soft(admin.tokens(request, ctx.caller))
    return page(request, ctx, "me.html", who=who, methods=methods, rules=rules, tokens=tokens)


@router.post("/me/contact_methods/{contact_method_id}/test")
async def me_test(contact_method_id: str, request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)

    async def run() -> views.Flash:
        sent = await directory.test_notification(
            ctx.caller.principal.id, contact_method_id, request, ctx.caller
        )
        kind = "ok" if sent["outcome"] in ("delivered", "sent", "accepted") else "error"
        return views.Flash(
            kind, f"Test page by {sent['channel']}: {sent['outcome']} {sent['detail']}"
        )

    return await attempt(request, "/console/me", "", run)


@router.post("/me/tokens")
async def me_token_create(request: Request) -> Response:
    ctx = await context(request)
    fields = await form_of(request, ctx)

    async def run() -> views.Flash:
        days = one(fields, "expires_in_days")
        body = models.TokenBody(
            name=one(fields, "name"),
            scope=one(fields, "scope") or None,  # type: ignore[arg-type]
            expires_in_days=int(days) if days.isdigit() else None,
        )
        made = await admin.create_token(body, request, ctx.caller)
        return views.Flash(
            "ok", "Token created; copy it now, it is shown once:", {"token": made["token"]}
        )

    return await attempt(request, "/console/me", "", run)


@router.post("/me/tokens/{token_id}/revoke")
async def me_token_revoke(token_id: str, request: Request) -> Response:
    ctx = await context(request)
    await form_of(request, ctx)

    async def run() -> None:
        await admin.revoke_token(token_id, request, ctx.caller)

    return await attempt(request, "/console/me", f"Token {token_id} revoked", run)


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    ctx = await context(request)
    denied = request.query_params.get("denied_only") == "1"
    actor = request.query_params.get("actor", "")[:200] or None
    cursor = request.query_params.get("cursor", "")[:500] or None
    try:
        found = await admin.audit_records(
            request, ctx.caller, actor=actor, denied_only=denied, limit=50, cursor=cursor
        )
    except Problem as problem:
        return page(
            request, ctx, "error.html", problem.status, title="Audit", problem=problem.detail
        )
    next_query = (
        urlencode(
            {
                "cursor": found["next_cursor"],
                "actor": actor or "",
                "denied_only": "1" if denied else "",
            }
        )
        if found["next_cursor"]
        else ""
    )
    return page(
        request,
        ctx,
        "audit.html",
        records=found["audit_records"],
        actor=actor or "",
        denied=denied,
        next_query=next_query,
    )


# ---------------------------------------------------------------------------------------------
# Insight (the KPI dashboard) and the post-incident review draft
# ---------------------------------------------------------------------------------------------


def _insight_query(request: Request) -> views.InsightQuery:
    return views.parse_insight_query(
        {k: request.query_params.getlist(k) for k in request.query_params}
    )


def _insight_filters(q: views.InsightQuery) -> analytics.Filters:
    return analytics.Filters(q.team_id, q.service_id, "", "", q.since_at, q.until_at, q.time_zone)


async def _report(request: Request, ctx: Ctx, q: views.InsightQuery) -> dict[str, Any]:
    return await analytics.incident_report(
        request,
        ctx.caller,
        _insight_filters(q),
        group_by=[q.group] if q.group else None,  # type: ignore[list-item]
        period=q.period or None,  # type: ignore[arg-type]
    )


@router.get("/insight")
async def insight_page(request: Request) -> Response:
    """The KPI dashboard: insight's report per group, its SLA breaches, recurring problems,
    the trend of MTTA and MTTR, and its overview (interruptions by hour class, noisy sources,
    change failure, error budget), for what the person may read (insight decides)."""
    ctx = await context(request)
    config = state_of(request).config.current
    form: dict[str, Any] = {
        "teams": [t.id for t in config.teams],
        "services": [s.id for s in config.services],
        "periods": views.PERIODS,
    }
    try:
        q = _insight_query(request)
    except views.FormProblem as problem:
        return page(
            request, ctx, "insight.html", 400, q=views.InsightQuery(), problem=str(problem), **form
        )
    f = _insight_filters(q)
    period = q.period or "day"
    try:
        report, breaches, problems, mtta, mttr, overview = await asyncio.gather(
            _report(request, ctx, q),
            soft(analytics.breaches(request, ctx.caller, f, limit=50)),
            soft(analytics.recurring_problems(request, ctx.caller, f)),
            soft(analytics.timeseries(request, "seconds_to_first_ack", ctx.caller, f, period)),  # type: ignore[arg-type]
            soft(analytics.timeseries(request, "seconds_to_resolve", ctx.caller, f, period)),  # type: ignore[arg-type]
            soft(analytics.overview(request, ctx.caller, f, top_sources=10)),
        )
    except Problem as problem:
        return page(
            request, ctx, "insight.html", problem.status, q=q, problem=problem.detail, **form
        )
    names = {**_names(config), **{t.id: t.name or t.id for t in config.teams}}
    groups = [views.InsightGroup.of(row, q.group, names) for row in report["data"]]
    trends = [
        (label, series, views.trend_text(series if isinstance(series, dict) else None))
        for label, series in (("Time to acknowledge", mtta), ("Time to resolve", mttr))
    ]
    return page(
        request,
        ctx,
        "insight.html",
        q=q,
        report=report,
        groups=groups,
        breaches=breaches,
        problems=problems,
        trends=trends,
        overview=overview,
        interruptions=[views.Interruptions.of(row, names) for row in overview["interruptions"]]
        if isinstance(overview, dict)
        else [],
        period=period,
        csv_query=urlencode(q.query()),
        **form,
    )


@router.get("/insight.csv")
async def insight_csv(request: Request) -> Response:
    """The Insight page's report rows as CSV (same filters, same authorisation)."""
    ctx = await context(request)
    try:
        q = _insight_query(request)
    except views.FormProblem as problem:
        raise Problem(400, str(problem)) from None
    report = await _report(request, ctx, q)
    return Response(
        views.csv_text(views.report_csv_rows(report)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tocsin-incident-report.csv"'},
    )


@router.get("/incidents/{incident_id}/review")
async def review_page(incident_id: str, request: Request) -> Response:
    """insight's post-incident review draft, shown as its Markdown text (escaped)."""
    ctx = await context(request)
    try:
        incident = await incidents.get_incident(incident_id, request, Response(), ctx.caller)
        draft = await analytics.review_draft(incident_id, request, ctx.caller)
    except Problem as problem:
        return page(
            request, ctx, "error.html", problem.status, title="Review draft", problem=problem.detail
        )
    return page(
        request,
        ctx,
        "review.html",
        incident=incident,
        markdown=bytes(draft.body).decode("utf-8"),
    )


# ---------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The console's routes, static files and signals on ``app``; ``/`` leads to it."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console/", status_code=307)

    @app.exception_handler(SignIn)
    async def on_sign_in(request: Request, signal: SignIn) -> Response:
        to = f"/console/login?{urlencode({'next': signal.next_path})}"
        flash = views.Flash("error", signal.message) if signal.message else None
        response = redirect(request, to, flash)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem) -> Response:
        if is_console(request.url.path):
            return page(
                request, None, "error.html", problem.status, title="Error", problem=problem.detail
            )
        return problem_response(problem)

    @app.exception_handler(BadForm)
    async def on_bad_form(request: Request, error: BadForm) -> Response:
        return page(
            request, None, "error.html", error.status, title="Refused", problem=error.detail
        )
