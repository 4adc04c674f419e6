"""notification's HTTP server: the signed acknowledge/resolve links of every page.

GET  /v1/links/{token}   a confirm page with a form that POSTs (no script); changes nothing,
HEAD /v1/links/{token}   so mail scanners and link previews that fetch links act on nothing
POST /v1/links/{token}   acknowledges/resolves: a command on incidents.commands whose actor
                         is the link's user (the signed link is the credential), audited

Only POST acts. Before acting (and before offering the form) the incident's current state
is read from escalation (`IncidentService.Get`): a link whose incident is already in or
past the state it leads to answers 409 with that state and changes nothing. A tampered
link, or one signed with a key no longer in the ring, answers 403; an expired one 410.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Protocol

import grpc
from aiohttp import web
from aiokafka.errors import KafkaError
from tocsin.v1 import incident_pb2, incident_service_pb2
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import incident_resource
from tocsin_common.auth.policy import Decision, Principal, PrincipalKind
from tocsin_common.clock import Clock
from tocsin_common.commands import incident_command, send_command
from tocsin_common.kafka import EventProducer
from tocsin_common.tracing import aiohttp_tracing_middleware

from tocsin_notification.links import (
    STATE_NAMES,
    LinkClaim,
    LinkError,
    LinkOutcome,
    LinkProblem,
    LinkSigner,
    link_outcome,
)

log = logging.getLogger("tocsin.notification.links")

_VERBS = {"acknowledge": ("Acknowledge", "acknowledged"), "resolve": ("Resolve", "resolved")}
# The incident's state on a 409, for clients that read headers rather than the page.
STATE_HEADER = "X-Tocsin-Incident-State"
_TIMEOUT_S = 10.0


class IncidentClient(Protocol):
    async def Get(
        self,
        request: incident_service_pb2.GetIncidentRequest,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC stub's keyword
    ) -> incident_pb2.Incident: ...


class LinkCommands(Protocol):
    """Carries out a verified link's action for the link's user."""

    async def send(self, claim: LinkClaim, peer: str) -> None: ...


class LinkCommandSender:
    """A signed link is the credential of one action by one person on one incident, so the
    command goes straight to incidents.commands with the link's user as its actor (not
    through IncidentService, where the caller would be notification itself), after an
    audit record of the decision."""

    def __init__(self, producer: EventProducer, access: AccessControl) -> None:
        self._producer = producer
        self._access = access

    async def send(self, claim: LinkClaim, peer: str) -> None:
        action = f"incident.{claim.action}"
        await self._access.audit.record(
            principal=Principal(claim.user_id, PrincipalKind.USER),
            action=action,
            resource=incident_resource(
                self._access.config.current, claim.incident_id, claim.service_id
            ),
            decision=Decision(
                True, f"signed link in a page to {claim.user_id!r} (key {claim.kid})"
            ),
            peer=peer,
            method="POST /v1/links/{token}",
        )
        kind = {claim.action: _COMMANDS[claim.action]()}
        command = incident_command(
            claim.incident_id, claim.service_id, claim.user_id, self._access.clock.now(), **kind
        )
        await send_command(self._producer, command)


_COMMANDS = {
    "acknowledge": incident_pb2.AcknowledgeCommand,
    "resolve": incident_pb2.ResolveCommand,
}


def _page(
    status: int,
    title: str,
    message: str,
    form: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{html.escape(title)} · Tocsin</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;
font-size:1.1rem}}button{{font-size:1.2rem;padding:.8rem 1.6rem}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{message}</p>{form}</body></html>"""
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",  # the token is in the URL
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
            **(headers or {}),
        },
    )


def _incident_words(claim: LinkClaim) -> str:
    """'<b>id</b> on <b>service</b>', escaped."""
    return f"<b>{html.escape(claim.incident_id)}</b> on <b>{html.escape(claim.service_id)}</b>"


class LinkHandler:
    def __init__(
        self, signer: LinkSigner, incidents: IncidentClient, commands: LinkCommands, clock: Clock
    ) -> None:
        self._signer = signer
        self._incidents = incidents  # reads only: the incident's current state
        self._commands = commands
        self._clock = clock

    def _claim(self, request: web.Request) -> LinkClaim | web.Response:
        try:
            return self._signer.verify(request.match_info["token"], self._clock.now())
        except LinkError as e:
            if e.problem is LinkProblem.EXPIRED:
                return _page(
                    410,
                    "This link has expired",
                    "Links in pages are valid for a limited time. Open the incident in "
                    "Tocsin or use a newer page to act on it.",
                )
            if e.problem is LinkProblem.UNKNOWN_KEY:
                return _page(
                    403,
                    "This link is no longer valid",
                    "It was signed with a key Tocsin no longer accepts. Open the incident in "
                    "Tocsin or use a newer page to act on it.",
                )
            return _page(
                403,
                "This link is not valid",
                "The link was changed or damaged on its way to you, so Tocsin will not act "
                "on it. Use the link exactly as it arrived, or open the incident in Tocsin.",
            )

    async def _status(self, claim: LinkClaim) -> int | web.Response:
        """The incident's current IncidentStatus, or the page that says why it is unknown."""
        try:
            incident = await self._incidents.Get(
                incident_service_pb2.GetIncidentRequest(incident_id=claim.incident_id),
                timeout=_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as e:
            return self._failed("look-up", claim, e)
        return int(incident.status)

    def _moot(self, claim: LinkClaim, status: int) -> web.Response:
        state = STATE_NAMES.get(status, "unknown")
        return _page(
            409,
            f"Already {state}",
            f"Incident {_incident_words(claim)} is already {html.escape(state)}, so "
            f"there is nothing to {claim.action}. Nothing was changed.",
            headers={STATE_HEADER: state},
        )

    def _failed(self, what: str, claim: LinkClaim, e: grpc.aio.AioRpcError) -> web.Response:
        log.warning(
            "link %s failed: %s",
            what,
            e.code().name,
            extra={"incident_id": claim.incident_id},
        )
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return _page(404, "Incident not found", html.escape(e.details() or ""))
        if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
            return _page(409, "Nothing to do", html.escape(e.details() or ""))
        return _page(
            503,
            "Tocsin could not do that right now",
            "Please try the link again in a moment.",
        )

    async def get(self, request: web.Request) -> web.Response:
        """The confirm page (also HEAD); reads, never acts."""
        claim = self._claim(request)
        if isinstance(claim, web.Response):
            return claim
        status = await self._status(claim)
        if isinstance(status, web.Response):
            return status
        if link_outcome(claim.action, status) is LinkOutcome.MOOT:
            return self._moot(claim, status)
        verb, _ = _VERBS[claim.action]
        # No action attribute: the form posts to this very URL. No script: it works as is.
        form = (
            f'<form method="post"><button type="submit">{verb} incident</button></form>'
            f"<p><small>Incident {html.escape(claim.incident_id)} on "
            f"{html.escape(claim.service_id)}, as {html.escape(claim.user_id)}.</small></p>"
        )
        return _page(
            200,
            f"{verb} this incident?",
            f"Press the button to {claim.action} incident {_incident_words(claim)}.",
            form,
        )

    async def post(self, request: web.Request) -> web.Response:
        claim = self._claim(request)
        if isinstance(claim, web.Response):
            return claim
        status = await self._status(claim)
        if isinstance(status, web.Response):
            return status
        if link_outcome(claim.action, status) is LinkOutcome.MOOT:
            return self._moot(claim, status)
        return await self._act(claim, request.remote or "")

    async def _act(self, claim: LinkClaim, peer: str) -> web.Response:
        _, done = _VERBS[claim.action]
        try:
            await asyncio.wait_for(self._commands.send(claim, peer), _TIMEOUT_S)
        except (KafkaError, TimeoutError) as e:
            log.warning(
                "link %s failed: %s",
                claim.action,
                type(e).__name__,
                extra={"incident_id": claim.incident_id},
            )
            return _page(
                503,
                "Tocsin could not do that right now",
                "Please try the link again in a moment.",
            )
        log.info(
            "incident %s by link",
            done,
            extra={"incident_id": claim.incident_id, "user_id": claim.user_id, "kid": claim.kid},
        )
        return _page(
            200,
            f"Incident {done}",
            f"Incident {_incident_words(claim)} is {done} by "
            f"{html.escape(claim.user_id)}. You can close this page.",
        )


def make_app(handler: LinkHandler) -> web.Application:
    app = web.Application(middlewares=[aiohttp_tracing_middleware("notification")])
    # add_get also routes HEAD to the same handler, which only reads.
    app.router.add_get("/v1/links/{token}", handler.get)
    app.router.add_post("/v1/links/{token}", handler.post)
    app.router.add_get("/healthz", _healthz)
    return app


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")
