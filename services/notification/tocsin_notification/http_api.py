"""notification's HTTP server: the signed acknowledge/resolve links of every page.

GET  /v1/links/{token}            a confirm page (mail scanners that prefetch links act on nothing)
POST /v1/links/{token}            acknowledges/resolves through escalation's IncidentService
GET  /v1/links/{token}?confirm=1  the same, for clients that cannot POST
A tampered link answers 403, an expired one 410, each with a page that says so.
"""

from __future__ import annotations

import html
import logging
from typing import Protocol

import grpc
from aiohttp import web
from tocsin.v1 import incident_service_pb2
from tocsin_common.clock import Clock
from tocsin_common.tracing import aiohttp_tracing_middleware

from tocsin_notification.links import LinkClaim, LinkError, LinkProblem, LinkSigner

log = logging.getLogger("tocsin.notification.links")

_VERBS = {"acknowledge": ("Acknowledge", "acknowledged"), "resolve": ("Resolve", "resolved")}


class IncidentCommands(Protocol):
    async def Acknowledge(
        self,
        request: incident_service_pb2.IncidentRef,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC stub's keyword
    ) -> incident_service_pb2.CommandAccepted: ...

    async def Resolve(
        self,
        request: incident_service_pb2.IncidentRef,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC stub's keyword
    ) -> incident_service_pb2.CommandAccepted: ...


def _page(status: int, title: str, message: str, form: str = "") -> web.Response:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Tocsin</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;
font-size:1.1rem}}button{{font-size:1.2rem;padding:.8rem 1.6rem}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{message}</p>{form}</body></html>"""
    return web.Response(status=status, text=body, content_type="text/html")


class LinkHandler:
    def __init__(self, signer: LinkSigner, incidents: IncidentCommands, clock: Clock) -> None:
        self._signer = signer
        self._incidents = incidents
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
            return _page(
                403,
                "This link is not valid",
                "The link was changed or damaged on its way to you, so Tocsin will not act "
                "on it. Use the link exactly as it arrived, or open the incident in Tocsin.",
            )

    async def get(self, request: web.Request) -> web.Response:
        claim = self._claim(request)
        if isinstance(claim, web.Response):
            return claim
        if request.query.get("confirm") == "1":
            return await self._act(claim)
        verb, _ = _VERBS[claim.action]
        form = (
            f'<form method="post"><button type="submit">{verb} incident</button></form>'
            f"<p><small>Incident {html.escape(claim.incident_id)} on "
            f"{html.escape(claim.service_id)}, as {html.escape(claim.user_id)}.</small></p>"
        )
        return _page(
            200,
            f"{verb} this incident?",
            f"Press the button to {claim.action} incident "
            f"<b>{html.escape(claim.incident_id)}</b> on <b>{html.escape(claim.service_id)}</b>.",
            form,
        )

    async def post(self, request: web.Request) -> web.Response:
        claim = self._claim(request)
        if isinstance(claim, web.Response):
            return claim
        return await self._act(claim)

    async def _act(self, claim: LinkClaim) -> web.Response:
        ref = incident_service_pb2.IncidentRef(incident_id=claim.incident_id, actor=claim.user_id)
        _, done = _VERBS[claim.action]
        try:
            if claim.action == "acknowledge":
                await self._incidents.Acknowledge(ref, timeout=10)
            else:
                await self._incidents.Resolve(ref, timeout=10)
        except grpc.aio.AioRpcError as e:
            log.warning("link action failed", extra={"incident_id": claim.incident_id})
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return _page(404, "Incident not found", html.escape(e.details() or ""))
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                return _page(409, "Nothing to do", html.escape(e.details() or ""))
            return _page(
                503,
                "Tocsin could not do that right now",
                "Please try the link again in a moment.",
            )
        log.info(
            "incident %s by link",
            done,
            extra={"incident_id": claim.incident_id, "user_id": claim.user_id},
        )
        return _page(
            200,
            f"Incident {done}",
            f"Incident <b>{html.escape(claim.incident_id)}</b> on "
            f"<b>{html.escape(claim.service_id)}</b> is {done} by "
            f"{html.escape(claim.user_id)}. You can close this page.",
        )


def make_app(handler: LinkHandler) -> web.Application:
    app = web.Application(middlewares=[aiohttp_tracing_middleware("notification")])
    app.router.add_get("/v1/links/{token}", handler.get)
    app.router.add_post("/v1/links/{token}", handler.post)
    app.router.add_get("/healthz", lambda _: _healthz())
    return app


async def _healthz() -> web.Response:
    return web.Response(text="ok")
