"""The status page's subscribers (docs/status-page.md).

- ``/api/v1/status_page/subscriptions``: an authenticated manager (policy action
  ``status_page.subscribers``, on a team of a service of the chosen components; every
  component: admin) creates, lists and deletes subscriptions. There is no anonymous sign-up.
  An e-mail subscription starts pending and its confirmation request goes on
  notifications.requests, which notification delivers; a webhook one is confirmed at once.
- ``/status/subscriptions/{id}/{confirm|unsubscribe}/{token}``: the capability links of
  the e-mails. GET shows a small page with a button (it changes nothing: mail scanners
  follow links); POST does it, state-checked (409 when it is moot). The token is the
  credential; the audit record's actor is ``subscription:<id>``.

The store is ``tocsin_common.statuspage.store``; the rules are the pure
``tocsin_common.statuspage.subscriptions``.
"""

from __future__ import annotations

import hmac
import html
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from tocsin.v1 import notification_pb2
from tocsin_common.auth.directory import service_teams
from tocsin_common.auth.policy import Decision, Principal, PrincipalKind, Resource
from tocsin_common.statuspage.store import RedisSubscriptions
from tocsin_common.statuspage.subscriptions import (
    MAX_SUBSCRIPTIONS,
    LinkPurpose,
    Subscription,
    SubscriptionError,
    confirm,
    lapsed,
    link_token,
    subscribe,
    unsubscribe,
)
from tocsin_common.timeutil import set_timestamp

from tocsin_api import models
from tocsin_api.deps import Caller, CallerDep, allows, audit, authorize, state_of
from tocsin_api.problems import Problem, invalid

log = logging.getLogger("tocsin.api.status")

ACTION = "status_page.subscribers"
# The link pages: a form that posts to this very URL, nothing else.
LINK_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)

api_router = APIRouter(prefix="/api/v1", tags=["status page"])
link_router = APIRouter(include_in_schema=False)


def _store(request: Request) -> RedisSubscriptions:
    store = state_of(request).status_subscriptions()
    if store is None:
        raise Problem(503, "the subscription store is not available")
    return cast(RedisSubscriptions, store)


def _now(request: Request) -> datetime:
    return datetime.fromtimestamp(state_of(request).clock(), UTC)


def _resource(request: Request, subscription_id: str, components: frozenset[str]) -> Resource:
    """A subscription belongs to the teams of the services of its components; one to every
    component to no team (admin)."""
    config = state_of(request).config.current
    teams: set[str] = set()
    if components:
        for component in config.status_page.components:
            if component.id in components:
                for service in component.services:
                    teams |= service_teams(config, service)
    return Resource("status_subscription", subscription_id, frozenset(teams))


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _out(sub: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": sub.subscription_id,
        "kind": sub.kind,
        "address": sub.address,
        "components": sorted(sub.components),
        "state": sub.state,
        "created_at": _iso(sub.created_at),
        "created_by": sub.created_by,
        "confirmed_at": _iso(sub.confirmed_at),
        "ended_at": _iso(sub.ended_at),
    }


def _key(request: Request) -> bytes:
    key = state_of(request).subscription_key
    if not key:
        raise Problem(503, "subscription links need the service secret")
    return key


def confirmation_request(sub: Subscription, now: datetime) -> notification_pb2.NotificationRequest:
    """What asks notification to send the confirmation e-mail (once per subscription)."""
    request = notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=f"status-confirm/{sub.subscription_id}",
        status_notice=notification_pb2.StatusNotice(
            kind="confirmation", subscription_id=sub.subscription_id
        ),
    )
    set_timestamp(request.requested_at, now)
    return request


@api_router.post(
    "/status_page/subscriptions",
    status_code=201,
    response_model=models.SubscriptionOut,
    summary="Subscribe an e-mail address (confirmed by its owner) or a webhook to status updates",
)
async def create_subscription(
    body: models.SubscriptionBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    state = state_of(request)
    page = state.config.current.status_page
    if not page.enabled:
        raise Problem(409, "status_page: the status page is not enabled in the config")
    subscription_id = str(uuid.uuid4())
    chosen = frozenset(body.components)
    key = _key(request)
    now = _now(request)
    try:
        sub = subscribe(
            subscription_id=subscription_id,
            kind=body.kind,
            address=body.address,
            components=chosen,
            known_components=[c.id for c in page.components],
            confirm_token=link_token(key, "confirm", subscription_id),
            unsubscribe_token=link_token(key, "unsubscribe", subscription_id),
            now=now,
            created_by=caller.principal.id,
        )
    except SubscriptionError as e:
        field, _, problem = str(e).partition(": ")
        raise invalid(field, problem) from None
    # Checked once the request is valid: an unknown component names the field (400).
    await authorize(request, caller, ACTION, _resource(request, subscription_id, chosen))
    store = _store(request)
    # Pending ones past their confirmation link can never be confirmed: dropped first.
    for gone in lapsed(await store.all(), now, page.confirmation_ttl):
        await store.delete(gone)
    if await store.count() >= MAX_SUBSCRIPTIONS:
        raise Problem(409, f"subscriptions: at most {MAX_SUBSCRIPTIONS}; delete some first")
    await store.put(sub)
    if sub.kind == "email":
        try:
            await state.send_notice(sub.subscription_id, confirmation_request(sub, now))
        except Exception:
            log.exception("could not request the confirmation e-mail")
            await store.delete(sub.subscription_id)
            raise Problem(
                503, "the confirmation e-mail could not be requested; try again"
            ) from None
    return _out(sub)


@api_router.get(
    "/status_page/subscriptions",
    response_model=models.SubscriptionList,
    summary="The status page's subscriptions the caller manages",
)
async def list_subscriptions(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    subs = await _store(request).all()
    return {
        "subscriptions": [
            _out(s)
            for s in subs
            if allows(caller, ACTION, _resource(request, s.subscription_id, s.components))
        ]
    }


@api_router.delete(
    "/status_page/subscriptions/{subscription_id}",
    status_code=204,
    summary="Delete a subscription: nothing more is sent to it",
)
async def delete_subscription(
    subscription_id: str, request: Request, caller: Caller = CallerDep
) -> Response:
    store = _store(request)
    sub = await store.get(subscription_id)
    if sub is None:
        raise Problem(
            404, f"subscription_id: no subscription {subscription_id!r}", kind="not-found"
        )
    await authorize(request, caller, ACTION, _resource(request, subscription_id, sub.components))
    await store.delete(subscription_id)
    return Response(status_code=204)


# --- the capability links --------------------------------------------------------------

_WORDS = {
    "confirm": ("Confirm", "confirm your subscription to", "confirmed"),
    "unsubscribe": ("Unsubscribe", "stop receiving the updates of", "unsubscribed"),
}


def _link_page(status: int, title: str, message: str, form: str = "") -> HTMLResponse:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;
font-size:1.1rem}}button{{font-size:1.2rem;padding:.8rem 1.6rem}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{form}</body></html>"""
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",  # the token is in the URL
            "Content-Security-Policy": LINK_CSP,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _purpose(purpose: str) -> str:
    if purpose not in _WORDS:
        raise Problem(404, "no such link", kind="not-found")
    return purpose


def _genuine(request: Request, subscription_id: str, purpose: str, token: str) -> bool:
    """Whether ``token`` is this subscription's link token for ``purpose``."""
    kind: LinkPurpose = "confirm" if purpose == "confirm" else "unsubscribe"
    expected = link_token(_key(request), kind, subscription_id)
    return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))


async def _checked(
    request: Request, subscription_id: str, purpose: str, token: str
) -> Subscription | HTMLResponse:
    """The subscription as the link leaves it (not stored here), or the page saying why the
    link does nothing: 404 for a wrong token or unknown subscription, 409 when it is moot,
    410 for an expired confirmation."""
    invalid_link = _link_page(404, "This link is not valid", "Use the link exactly as it arrived.")
    if not _genuine(request, subscription_id, purpose, token):
        return invalid_link
    sub = await _store(request).get(subscription_id)
    if sub is None:
        return _link_page(404, "This link is not valid", "The subscription was deleted.")
    try:
        if purpose == "confirm":
            if sub.state == "confirmed":
                return _link_page(409, "Already confirmed", "Nothing was changed.")
            return confirm(sub, token, _now(request), _ttl(request))
        if sub.state == "unsubscribed":
            return _link_page(409, "Already unsubscribed", "Nothing was changed.")
        return unsubscribe(sub, token, _now(request))
    except SubscriptionError as e:
        text = str(e)
        if "expired" in text:
            return _link_page(410, "This link has expired", text.removeprefix("token: "))
        if "ended" in text:
            return _link_page(409, "This subscription has ended", "Nothing was changed.")
        return invalid_link


def _ttl(request: Request) -> Any:
    return state_of(request).config.current.status_page.confirmation_ttl


@link_router.get("/status/subscriptions/{subscription_id}/{purpose}/{token}")
async def link_form(subscription_id: str, purpose: str, token: str, request: Request) -> Response:
    """The link's page: a button that POSTs (a GET never changes anything)."""
    verb, what, _ = _WORDS[_purpose(purpose)]
    found = await _checked(request, subscription_id, purpose, token)
    if isinstance(found, HTMLResponse):
        return found
    page = state_of(request).config.current.status_page.title
    form = f'<form method="post"><button type="submit">{html.escape(verb)}</button></form>'
    return _link_page(200, f"{verb}?", f"Press the button to {what} {page}.", form)


@link_router.post("/status/subscriptions/{subscription_id}/{purpose}/{token}")
async def link_act(subscription_id: str, purpose: str, token: str, request: Request) -> Response:
    """Do it (also the one-click unsubscribe of RFC 8058's List-Unsubscribe-Post)."""
    _, _, done = _WORDS[_purpose(purpose)]
    found = await _checked(request, subscription_id, purpose, token)
    # The token is the credential: without the right one the caller is nobody.
    genuine = _genuine(request, subscription_id, purpose, token)
    actor = Principal(f"subscription:{subscription_id}", PrincipalKind.USER) if genuine else None
    resource = Resource("status_subscription", subscription_id)
    if isinstance(found, HTMLResponse):
        reason = f"the {purpose} link answered {found.status_code}"
        await audit(request, actor, f"{ACTION}.{purpose}", resource, Decision(False, reason))
        return found
    if not await _store(request).replace(found):
        deleted = _link_page(404, "This link is not valid", "The subscription was deleted.")
        await audit(request, actor, f"{ACTION}.{purpose}", resource, Decision(False, "deleted"))
        return deleted
    await audit(
        request,
        actor,
        f"{ACTION}.{purpose}",
        resource,
        Decision(True, f"the subscription's {purpose} link"),
    )
    page = state_of(request).config.current.status_page.title
    return _link_page(200, f"Subscription {done}", f"Your subscription to {page} is {done}.")


def install(app: FastAPI) -> None:
    app.include_router(api_router)
    app.include_router(link_router)
