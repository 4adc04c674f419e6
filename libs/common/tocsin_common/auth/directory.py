"""Principals and resources as the configuration defines them (pure).

The config says who holds which role on which team (teams' members, managers and viewers;
access.admins; access.service_accounts) and which team owns what (a service's ``team``; a
schedule's ``team`` and the teams of the services whose policies page it; a user's teams).
"""

from __future__ import annotations

from tocsin_common.auth.policy import Principal, PrincipalKind, Resource, Role
from tocsin_common.config.model import TocsinConfig

# The principal `make up` and deployments bootstrap with (tools/devstack.py, `python -m
# tocsin_common.auth bootstrap`): a global admin that is no person, so the first tokens can
# be made before anyone logs in. Reserved: no user or service account may take the id.
BOOTSTRAP_ADMIN = "tocsin-admin"


def team_roles_of(config: TocsinConfig, user_id: str) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for team in config.teams:
        held = Role.NONE
        if user_id in team.viewers:
            held = max(held, Role.VIEWER)
        if user_id in team.members:
            held = max(held, Role.RESPONDER)
        if user_id in team.managers:
            held = max(held, Role.MANAGER)
        if held:
            roles[team.id] = held
    return roles


def principal_for(
    config: TocsinConfig,
    subject_id: str,
    kind: PrincipalKind,
    *,
    scope: Role = Role.ADMIN,
    token_id: str = "",
) -> Principal | None:
    """The principal ``subject_id`` stands for under ``config``; None when the config no
    longer knows it (a deleted user's tokens stop working with the reload)."""
    if kind is PrincipalKind.USER:
        try:
            config.user(subject_id)
        except KeyError:
            return None
        return Principal(
            subject_id,
            kind,
            team_roles=team_roles_of(config, subject_id),
            admin=subject_id in config.access.admins,
            scope=scope,
            token_id=token_id,
        )
    if kind is PrincipalKind.SERVICE_ACCOUNT:
        if subject_id == BOOTSTRAP_ADMIN:
            return Principal(subject_id, kind, admin=True, scope=scope, token_id=token_id)
        for account in config.access.service_accounts:
            if account.id == subject_id:
                return Principal(
                    subject_id,
                    kind,
                    team_roles={g.team: Role.parse(g.role) for g in account.roles},
                    admin=account.admin,
                    scope=scope,
                    token_id=token_id,
                )
        return None
    return None


def service_teams(config: TocsinConfig, service_id: str) -> frozenset[str]:
    try:
        team = config.service(service_id).team
    except KeyError:
        return frozenset()
    return frozenset({team}) if team else frozenset()


def service_resource(config: TocsinConfig, service_id: str) -> Resource:
    return Resource("service", service_id, service_teams(config, service_id))


def user_resource(config: TocsinConfig, user_id: str) -> Resource:
    """A person's profile belongs to every team they hold a role on, and to themselves."""
    teams = frozenset(
        t.id for t in config.teams if user_id in (*t.members, *t.managers, *t.viewers)
    )
    return Resource("user", user_id, teams, owner=user_id)


def incident_resource(config: TocsinConfig, incident_id: str, service_id: str) -> Resource:
    return Resource("incident", incident_id, service_teams(config, service_id))


def schedule_teams(config: TocsinConfig, schedule_id: str) -> frozenset[str]:
    """The schedule's own team and the teams of every service whose policy pages it."""
    teams: set[str] = set()
    try:
        own = config.schedule(schedule_id).team
    except KeyError:
        return frozenset()
    if own:
        teams.add(own)
    paging = {
        policy.id
        for policy in config.escalation_policies
        for level in policy.levels
        for target in level.targets
        if target.type == "schedule" and target.id == schedule_id
    }
    teams.update(s.team for s in config.services if s.team and s.escalation_policy in paging)
    return frozenset(teams)


def schedule_resource(
    config: TocsinConfig,
    schedule_id: str,
    *,
    kind: str = "schedule",
    owner: str = "",
    ident: str = "",
) -> Resource:
    return Resource(kind, ident or schedule_id, schedule_teams(config, schedule_id), owner)


def policy_resource(config: TocsinConfig, policy_id: str) -> Resource:
    """An escalation policy belongs to the teams of the services it pages for."""
    teams = frozenset(
        s.team for s in config.services if s.team and s.escalation_policy == policy_id
    )
    return Resource("escalation_policy", policy_id, teams)


def user_teams(config: TocsinConfig, user_id: str) -> frozenset[str]:
    return frozenset(t.id for t in config.teams if user_id in t.members)


def contact_resource(config: TocsinConfig, user_id: str, contact_method_id: str = "") -> Resource:
    ident = f"{user_id}/{contact_method_id}" if contact_method_id else user_id
    return Resource("contact", ident, user_teams(config, user_id), owner=user_id)


def silence_resource(config: TocsinConfig, silence_id: str, service_id: str) -> Resource:
    """A silence of one service belongs to its team; one of every service to no team."""
    return Resource(
        "silence", silence_id, service_teams(config, service_id) if service_id else frozenset()
    )


def heartbeat_resource(config: TocsinConfig, heartbeat_id: str) -> Resource:
    """A heartbeat monitor belongs to its service's team (no team: an unknown monitor)."""
    try:
        service_id = config.heartbeat(heartbeat_id).service
    except KeyError:
        return Resource("heartbeat", heartbeat_id)
    return Resource("heartbeat", heartbeat_id, service_teams(config, service_id))
