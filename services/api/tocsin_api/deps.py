"""What every route needs: the process's collaborators, and the authenticated caller.

The caller is authenticated here with the shared Authenticator (a bad credential is 401
before any gRPC call), then counted against its rate limit (429). Routes that read
config-owned resources authorise with the shared ``decide`` through :func:`authorize`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Depends, Request
from tocsin_common.auth.access import AuditLog, AuthFailure
from tocsin_common.auth.policy import Decision, Principal, Resource, decide, is_mutation
from tocsin_common.config.model import TocsinConfig

from tocsin_api.backends import Backends
from tocsin_api.feeds import FeedStore
from tocsin_api.problems import Problem
from tocsin_api.ratelimit import RateLimiter
from tocsin_api.settings import ApiSettings

log = logging.getLogger("tocsin.api")


class Authenticates(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure: ...


class HasConfig(Protocol):
    @property
    def current(self) -> TocsinConfig: ...


async def _no_notices(key: str, request: Any) -> None:
    raise RuntimeError("this api sends no notification requests")


@dataclass
class ApiState:
    """The process's collaborators, built once by the entry point (or a test)."""

    config: HasConfig
    authenticator: Authenticates
    backends: Backends
    settings: ApiSettings
    feeds: Callable[[], FeedStore]
    limiter: Callable[[], RateLimiter | None] = lambda: None
    audit: AuditLog | None = None
    service_credential: Callable[[], str] = lambda: ""
    ready: Callable[[], Any] | None = None  # an awaitable check for /readyz
    # The web console's cookie secret (docs/console.md); "" turns the console off
    console_secret: str = ""
    clock: Callable[[], float] = time.time
    # Responders' overrides of the status page's components (status/overrides.py)
    status_overrides: Callable[[], Any] = lambda: None
    # The status page's subscriptions (tocsin_common.statuspage.store), the key of their
    # links, and how a confirmation request reaches notification (key, request)
    status_subscriptions: Callable[[], Any] = lambda: None
    subscription_key: bytes = b""
    send_notice: Callable[[str, Any], Awaitable[None]] = _no_notices
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    credential: str  # the bearer credential, forwarded on every gRPC call


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


async def audit(
    request: Request,
    principal: Principal | None,
    action: str,
    resource: Resource,
    decision: Decision,
) -> None:
    """An audit record of a decision taken here (best effort: the audit topic being down
    must not turn a 401/403 into a 500; the failure is logged)."""
    state = state_of(request)
    if state.audit is None:
        return
    try:
        await state.audit.record(
            principal=principal,
            action=action,
            resource=resource,
            decision=decision,
            peer=_peer(request),
            method=f"{request.method} {request.url.path}",
        )
    except Exception:
        log.exception("could not write an audit record")


async def caller(request: Request) -> Caller:
    return await caller_for(request, request.headers.get("authorization"))


async def caller_for(request: Request, header: str | None) -> Caller:
    """The caller a bearer ``header`` authenticates (401 and 429 as Problems); the console
    authenticates its session's credential with it, exactly as a bearer request."""
    state = state_of(request)
    outcome = await state.authenticator.authenticate(header)
    if isinstance(outcome, AuthFailure):
        await audit(
            request,
            None,
            f"{request.method} {request.url.path}",
            Resource("http", request.url.path),
            Decision(False, outcome.reason),
        )
        raise Problem(401, outcome.reason, headers={"WWW-Authenticate": "Bearer"})
    limiter = state.limiter()
    if limiter is not None:
        key = outcome.token_id or outcome.id
        verdict = await limiter.hit(key, state.clock())
        if not verdict.allowed:
            raise Problem(
                429,
                f"more than {limiter.limit} requests per minute with this token; "
                f"retry in {verdict.retry_after_s} s",
                headers={"Retry-After": str(verdict.retry_after_s)},
            )
    assert header is not None
    return Caller(outcome, header.strip().partition(" ")[2].strip())


CallerDep = Depends(caller)


async def authorize(request: Request, caller: Caller, action: str, resource: Resource) -> None:
    """403 with the reason unless ``decide`` allows; denials (and mutations) audited."""
    decision = decide(caller.principal, action, resource)
    if is_mutation(action) or not decision.allowed:
        await audit(request, caller.principal, action, resource, decision)
    if not decision.allowed:
        raise Problem(403, decision.reason)


def allows(caller: Caller, action: str, resource: Resource) -> bool:
    """For filtering lists (not audited, as the services do)."""
    return decide(caller.principal, action, resource).allowed
