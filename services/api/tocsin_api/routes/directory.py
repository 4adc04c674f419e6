"""Config-owned resources: services (integration keys masked) and their heartbeats,
escalation policies, users, their contact methods and notification rules, test pages.

Read from the validated config file every service loads, authorised with ``decide``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from tocsin.v1 import heartbeat_service_pb2, notification_service_pb2, oncall_service_pb2
from tocsin_common.auth.directory import (
    contact_resource,
    policy_resource,
    service_resource,
    user_resource,
)
from tocsin_common.config.model import TocsinConfig, User

from tocsin_api import convert, models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, allows, authorize, state_of
from tocsin_api.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["directory"])


def _config(request: Request) -> TocsinConfig:
    return state_of(request).config.current


@router.get("/services", response_model=models.Services, summary="The services you may read")
async def services(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    return {
        "services": [
            convert.service(config, s)
            for s in config.services
            if allows(caller, "service.read", service_resource(config, s.id))
        ]
    }


@router.get("/services/{service_id}", response_model=models.ServiceOut, summary="One service")
async def service(service_id: str, request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    try:
        found = config.service(service_id)
    except KeyError:
        raise Problem(404, f"service_id: no service {service_id!r}") from None
    await authorize(request, caller, "service.read", service_resource(config, service_id))
    return convert.service(config, found)


@router.get(
    "/services/{service_id}/heartbeats",
    response_model=models.Heartbeats,
    summary="The service's heartbeat monitors and their last pings",
)
async def heartbeats(
    service_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    config = _config(request)
    try:
        config.service(service_id)
    except KeyError:
        raise Problem(404, f"service_id: no service {service_id!r}") from None
    await authorize(request, caller, "service.read", service_resource(config, service_id))
    found = await call(
        state_of(request).backends.heartbeats.ListHeartbeats,
        heartbeat_service_pb2.ListHeartbeatsRequest(service_id=service_id),
        caller.credential,
    )
    return {"heartbeats": [convert.heartbeat(h) for h in found.heartbeats]}


@router.get(
    "/escalation_policies",
    response_model=models.EscalationPolicies,
    summary="The escalation policies you may read",
)
async def policies(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    return {
        "escalation_policies": [
            convert.escalation_policy(p)
            for p in config.escalation_policies
            if allows(caller, "escalation_policy.read", policy_resource(config, p.id))
        ]
    }


@router.get(
    "/escalation_policies/{policy_id}",
    response_model=models.EscalationPolicyOut,
    summary="One escalation policy",
)
async def policy(policy_id: str, request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    try:
        found = config.policy(policy_id)
    except KeyError:
        raise Problem(404, f"policy_id: no escalation policy {policy_id!r}") from None
    await authorize(request, caller, "escalation_policy.read", policy_resource(config, policy_id))
    return convert.escalation_policy(found)


@router.get("/users", response_model=models.Users, summary="The users you may see")
async def users(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    return {
        "users": [
            convert.user(config, u)
            for u in config.users
            if allows(caller, "user.read", user_resource(config, u.id))
        ]
    }


@router.get("/users/me", response_model=models.Me, summary="Who you are, and your roles")
async def me(request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    config = _config(request)
    p = caller.principal
    try:
        person: dict[str, Any] | None = convert.user(config, config.user(p.id))
    except KeyError:
        person = None
    return {
        "id": p.id,
        "kind": p.kind.name.lower(),
        "admin": p.admin,
        "team_roles": {team: role.label for team, role in p.team_roles.items()},
        "scope": p.scope.label if p.scope else None,
        "user": person,
    }


async def _user(request: Request, caller: Caller, user_id: str, action: str) -> User:
    config = _config(request)
    try:
        found = config.user(user_id)
    except KeyError:
        raise Problem(404, f"user_id: no user {user_id!r}") from None
    resource = (
        user_resource(config, user_id)
        if action == "user.read"
        else contact_resource(config, user_id)
    )
    await authorize(request, caller, action, resource)
    return found


@router.get("/users/{user_id}", response_model=models.UserOut, summary="One user")
async def user(user_id: str, request: Request, caller: Caller = CallerDep) -> dict[str, Any]:
    return convert.user(_config(request), await _user(request, caller, user_id, "user.read"))


@router.get(
    "/users/{user_id}/contact_methods",
    response_model=models.ContactMethods,
    summary="A user's contact methods (your own; managers: their team's)",
)
async def contact_methods(
    user_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    found = await _user(request, caller, user_id, "contact.read")
    if not found.contact_methods:
        return {"contact_methods": []}
    # Looked up through escalation (as notification does), with the caller's credential.
    reply = await call(
        state_of(request).backends.oncall.GetContactMethods,
        oncall_service_pb2.GetContactMethodsRequest(
            lookups=[
                oncall_service_pb2.GetContactMethodRequest(user_id=user_id, contact_method_id=c.id)
                for c in found.contact_methods
            ]
        ),
        caller.credential,
    )
    names = {c.id: c.name for c in found.contact_methods}
    out = []
    for result in reply.results:
        if result.HasField("contact_method"):
            cm = result.contact_method
            out.append(
                {
                    "id": cm.contact_method_id,
                    "type": cm.type,
                    "address": cm.address,
                    "name": names.get(cm.contact_method_id, ""),
                }
            )
        elif result.error.code == 7:  # PERMISSION_DENIED
            raise Problem(403, result.error.message)
    return {"contact_methods": out}


@router.get(
    "/users/{user_id}/notification_rules",
    response_model=models.NotificationRules,
    summary="How a user is paged, per urgency (your own; managers: their team's)",
)
async def notification_rules(
    user_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    found = await _user(request, caller, user_id, "contact.read")
    return convert.notification_rules(found.notification_rules)


@router.post(
    "/users/{user_id}/contact_methods/{contact_method_id}/test",
    response_model=models.TestNotification,
    summary="Send a test page to one contact method now",
)
async def test_notification(
    user_id: str, contact_method_id: str, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    status = await call(
        state_of(request).backends.notification.SendTestNotification,
        notification_service_pb2.SendTestNotificationRequest(
            user_id=user_id, contact_method_id=contact_method_id
        ),
        caller.credential,
    )
    return {
        "request_id": status.request_id,
        "channel": status.channel,
        "outcome": convert.OUTCOMES.get(status.outcome, "unspecified"),
        "detail": status.detail,
    }
