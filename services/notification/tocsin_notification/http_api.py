"""notification's HTTP server: the signed acknowledge/resolve links of every page, and the
approve/reject links of the messages asking for an automation action's approval.

GET  /v1/links/{token}   a confirm page with a form that POSTs (no script); changes nothing,
HEAD /v1/links/{token}   so mail scanners and link previews that fetch links act on nothing
POST /v1/links/{token}   acknowledges/resolves: a command on incidents.commands whose actor
                         is the link's user (the signed link is the credential), audited;
                         approves/rejects: the decision on the rule's waiting actions, its
                         actor the link's user, audited (automation.approve)

Only POST acts. Before acting (and before offering the form) the current state is read: the
incident's from escalation (`IncidentService.Get`), or the approval's from Redis. A link
whose incident is already in or past the state it leads to, or whose approval is no longer
pending (decided, or expired), answers 409 with that state and changes nothing. A tampered
link, or one signed with a key no longer in the ring, answers 403; an expired one 410.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Literal, Protocol

import grpc
from aiohttp import web
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from tocsin.v1 import incident_pb2, incident_service_pb2
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import incident_resource
from tocsin_common.auth.policy import Decision, Principal, PrincipalKind
from tocsin_common.automation.approval import Approval, ApprovalConflict
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
    approval_outcome,
    link_outcome,
)

log = logging.getLogger("tocsin.notification.links")

_VERBS = {
    "acknowledge": ("Acknowledge", "acknowledged"),
    "resolve": ("Resolve", "resolved"),
    "approve": ("Approve", "approved"),
    "reject": ("Reject", "rejected"),
}
# The incident's state on a 409, for clients that read headers rather than the page.
STATE_HEADER = "X-Tocsin-Incident-State"
# The approval's state on a 409 of an approve/reject link (approved, rejected, expired).
APPROVAL_STATE_HEADER = "X-Tocsin-Approval-State"
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


class LinkApprovals(Protocol):
    """Reads and decides the automation approvals a verified approve/reject link names."""

    async def firings(self, claim: LinkClaim) -> list[Approval]: ...

    async def decide(self, claim: LinkClaim, peer: str) -> list[Approval]: ...


class ApprovalDecider(Protocol):
    async def firings(self, incident_id: str, rule_id: str) -> list[Approval]: ...

    async def decide(
        self,
        incident_id: str,
        rule_id: str,
        verdict: Literal["approve", "reject"],
        actor: str,
        reason: str = "",
    ) -> list[Approval]: ...


class LinkApprovalSender:
    """A signed approve/reject link is the credential of one decision by the person the
    message went to: audited as ``automation.approve`` by that person, then decided with
    them as its actor (approved actions go back on notifications.requests to run)."""

    def __init__(self, decider: ApprovalDecider, access: AccessControl) -> None:
        self._decider = decider
        self._access = access

    async def firings(self, claim: LinkClaim) -> list[Approval]:
        return await self._decider.firings(claim.incident_id, claim.rule_id)

    async def decide(self, claim: LinkClaim, peer: str) -> list[Approval]:
        await self._access.audit.record(
            principal=Principal(claim.user_id, PrincipalKind.USER),
            action="automation.approve",
            resource=incident_resource(
                self._access.config.current, claim.incident_id, claim.service_id
            ),
            decision=Decision(
                True,
                f"signed {claim.action} link for rule {claim.rule_id!r} in a message to "
                f"{claim.user_id!r} (key {claim.kid})",
            ),
            peer=peer,
            method="POST /v1/links/{token}",
        )
        verdict: Literal["approve", "reject"] = (
            "approve" if claim.action == "approve" else "reject"
        )
        return await self._decider.decide(
            claim.incident_id, claim.rule_id, verdict, claim.user_id
        )


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


def _approval_words(claim: LinkClaim) -> str:
    """'automation rule <b>x</b> on incident <b>id</b> on <b>service</b>', escaped."""
    rule = html.escape(claim.rule_id)
    return f"automation rule <b>{rule}</b> on incident {_incident_words(claim)}"


class LinkHandler:
    def __init__(
        self,
        signer: LinkSigner,
        incidents: IncidentClient,
        commands: LinkCommands,
        clock: Clock,
        approvals: LinkApprovals | None = None,
    ) -> None:
        self._signer = signer
        self._incidents = incidents  # reads only: the incident's current state
        self._commands = commands
        self._clock = clock
        self._approvals = approvals

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
        if claim.decides_approval:
            return await self._approval_get(claim)
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
        if claim.decides_approval:
            return await self._approval_post(claim, request.remote or "")
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


    # --- approve/reject links ---------------------------------------------------------

    async def _waiting(self, claim: LinkClaim) -> list[Approval] | web.Response:
        """The rule's firings on the incident, or the page that says why not (none: 404;
        none pending: 409 with the latest one's state)."""
        if self._approvals is None:
            return _page(404, "Nothing waits for approval", "This Tocsin runs no automation.")
        try:
            firings = await asyncio.wait_for(self._approvals.firings(claim), _TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            return self._unavailable(claim, e)
        if not firings:
            return _page(
                404,
                "Nothing waits for approval",
                f"No action of {_approval_words(claim)} ever waited for approval.",
            )
        if approval_outcome([f.state for f in firings]) is LinkOutcome.MOOT:
            return self._moot_approval(claim, firings[-1])
        return firings

    def _moot_approval(self, claim: LinkClaim, latest: Approval) -> web.Response:
        by = f" by {latest.decided_by}" if latest.decided_by else ""
        return _page(
            409,
            f"Already {latest.state}",
            f"The action of {_approval_words(claim)} is already "
            f"{html.escape(latest.state + by)}, so there is nothing to {claim.action}. "
            "Nothing was changed.",
            headers={APPROVAL_STATE_HEADER: latest.state},
        )

    def _unavailable(self, claim: LinkClaim, e: BaseException) -> web.Response:
        log.warning(
            "link %s failed: %s",
            claim.action,
            type(e).__name__,
            extra={"incident_id": claim.incident_id},
        )
        return _page(
            503, "Tocsin could not do that right now", "Please try the link again in a moment."
        )

    async def _approval_get(self, claim: LinkClaim) -> web.Response:
        waiting = await self._waiting(claim)
        if isinstance(waiting, web.Response):
            return waiting
        verb, _ = _VERBS[claim.action]
        pending = [f for f in waiting if f.state == "pending"]
        until = max(f.expires_at for f in pending).isoformat(timespec="seconds")
        runs = "it runs now" if claim.action == "approve" else "it never runs"
        form = (
            f'<form method="post"><button type="submit">{verb}</button></form>'
            f"<p><small>Rule {html.escape(claim.rule_id)} on incident "
            f"{html.escape(claim.incident_id)}, as {html.escape(claim.user_id)}; it waits "
            f"until {html.escape(until)}.</small></p>"
        )
        return _page(
            200,
            f"{verb} this automation action?",
            f"Press the button to {claim.action} the action of {_approval_words(claim)}: "
            f"{runs}.",
            form,
        )

    async def _approval_post(self, claim: LinkClaim, peer: str) -> web.Response:
        waiting = await self._waiting(claim)
        if isinstance(waiting, web.Response):
            return waiting
        assert self._approvals is not None
        _, done = _VERBS[claim.action]
        try:
            await asyncio.wait_for(self._approvals.decide(claim, peer), _TIMEOUT_S)
        except ApprovalConflict:
            # Decided (or expired) between the look and the decision.
            latest = await self._waiting(claim)
            if isinstance(latest, web.Response):
                return latest
            return _page(409, "Already decided", "Someone decided it just now.")
        except LookupError:
            return _page(404, "Nothing waits for approval", "It is gone.")
        except (KafkaError, RedisError, OSError, TimeoutError) as e:
            return self._unavailable(claim, e)
        log.info(
            "automation %s by link",
            done,
            extra={
                "incident_id": claim.incident_id,
                "rule_id": claim.rule_id,
                "user_id": claim.user_id,
                "kid": claim.kid,
            },
        )
        then = "It runs now." if claim.action == "approve" else "It will not run."
        return _page(
            200,
            f"Action {done}",
            f"The action of {_approval_words(claim)} is {done} by "
            f"{html.escape(claim.user_id)}. {then} You can close this page.",
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
