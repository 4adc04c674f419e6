"""Who may do what: principals, roles, actions, resources and the one decision function.

Pure: no I/O, no clock. Every surface (gRPC interceptors and servicers, the HTTP API, the
console) asks :func:`decide` and records what it answered; nothing else decides access.

Roles are held on teams and ordered viewer < responder < manager; admin is global and
above them all. A resource belongs to teams (an incident to its service's team, a schedule
to the teams of the services that page it, a contact method to its user's teams), and a
principal's role on a resource is its best role on any of those teams, capped by the
token's scope. Some actions are also open to the resource's owner with a lower bar (a
responder manages their own overrides; anyone reads their own contact methods and tokens).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Role(enum.IntEnum):
    """Ordered: a higher role may do everything a lower one may (values as in auth.proto)."""

    NONE = 0
    VIEWER = 1
    RESPONDER = 2
    MANAGER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            role = cls[text.strip().upper()]
        except KeyError:
            role = cls.NONE
        if role is cls.NONE:
            raise ValueError(
                f"unknown role {text!r}; expected one of viewer, responder, manager, admin"
            )
        return role


class PrincipalKind(enum.IntEnum):
    USER = 1
    SERVICE_ACCOUNT = 2
    SERVICE = 3  # a Tocsin service calling another


@dataclass(frozen=True)
class Principal:
    """Who a verified credential stands for."""

    id: str
    kind: PrincipalKind
    team_roles: Mapping[str, Role] = field(default_factory=dict)
    admin: bool = False
    scope: Role = Role.ADMIN  # the token's cap on every role; ADMIN caps nothing
    token_id: str = ""

    def role_on(self, teams: frozenset[str]) -> Role:
        """The best role held on any of ``teams`` (admin everywhere), capped by the scope."""
        if self.admin:
            best = Role.ADMIN
        else:
            best = max((self.team_roles.get(t, Role.NONE) for t in teams), default=Role.NONE)
        return min(best, self.scope)

    @property
    def best_role(self) -> Role:
        """The best role held anywhere, capped by the scope."""
        if self.admin:
            return min(Role.ADMIN, self.scope)
        return min(max(self.team_roles.values(), default=Role.NONE), self.scope)


ANONYMOUS_ACTOR = "anonymous"
SERVICE_PREFIX = "service:"  # a service principal's id: "service:notification"


@dataclass(frozen=True)
class Resource:
    """What an action touches: its kind and id, the teams it belongs to, its owner."""

    kind: str
    id: str = ""
    teams: frozenset[str] = frozenset()
    owner: str = ""  # a user id: the resource is theirs (their override, contact, token)


@dataclass(frozen=True)
class Rule:
    """What an action needs: ``role`` on the resource's teams; or, when the principal owns
    the resource, ``own`` (Role.NONE: owning it is enough). ``services``: Tocsin services
    allowed with their service credential."""

    role: Role
    own: Role | None = None
    mutation: bool = True
    services: frozenset[str] = frozenset()
    summary: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


# The decision table. docs/security.md's table of roles is generated from it and a unit
# test holds the two equal.
RULES: dict[str, Rule] = {
    "incident.read": Rule(
        Role.VIEWER,
        mutation=False,
        services=frozenset({"notification"}),
        summary="see incidents, their timelines and deliveries",
    ),
    "incident.acknowledge": Rule(Role.RESPONDER, summary="acknowledge an incident"),
    "incident.resolve": Rule(Role.RESPONDER, summary="resolve an incident"),
    "incident.snooze": Rule(Role.RESPONDER, summary="snooze an incident"),
    "incident.reassign": Rule(Role.RESPONDER, summary="reassign an incident"),
    "incident.note": Rule(Role.RESPONDER, summary="add a note to an incident"),
    "incident.priority": Rule(Role.RESPONDER, summary="set an incident's priority"),
    "incident.status_update": Rule(
        Role.RESPONDER, summary="post a status update for the public on an incident"
    ),
    "incident.set_impact": Rule(
        Role.RESPONDER,
        summary="set (or clear) an incident's public impact on the status page",
    ),
    "status_page.override": Rule(
        Role.RESPONDER,
        summary="override a public component's state (on a team of one of its services)",
    ),
    "status_page.subscribers": Rule(
        Role.MANAGER,
        summary="create, list and delete the status page's subscribers (on a team of a "
        "service of one of its components; every component: admin)",
    ),
    "status_page.read": Rule(
        Role.VIEWER,
        mutation=False,
        services=frozenset({"api"}),
        summary="read what the public status page is built from (api: to serve the page)",
    ),
    "automation.approve": Rule(
        Role.RESPONDER,
        summary="approve or reject an automation action that waits on an incident",
    ),
    "automation.dry_run": Rule(
        Role.MANAGER,
        mutation=False,
        summary="count how often an automation rule would have fired over past incidents "
        "(on the teams of the services it names; none named: every team)",
    ),
    "schedule.read": Rule(
        Role.VIEWER,
        mutation=False,
        services=frozenset({"api"}),
        summary="see schedules and who is on call (api: a calendar feed, once its owner may)",
    ),
    "oncall.read": Rule(
        Role.VIEWER,
        mutation=False,
        services=frozenset({"insight"}),
        summary="see who an escalation policy pages now (insight: the deploy gate's on-call rule)",
    ),
    "service.read": Rule(
        Role.VIEWER, mutation=False, summary="see a service (its integration keys masked)"
    ),
    "escalation_policy.read": Rule(Role.VIEWER, mutation=False, summary="see an escalation policy"),
    "user.read": Rule(
        Role.VIEWER,
        own=Role.NONE,
        mutation=False,
        summary="see a user's name, email and time zone (anyone: their own)",
    ),
    "override.create": Rule(
        Role.MANAGER,
        own=Role.RESPONDER,
        summary="create a schedule override (responders: for themselves)",
    ),
    "override.delete": Rule(
        Role.MANAGER,
        own=Role.RESPONDER,
        summary="delete a schedule override (responders: their own)",
    ),
    "contact.read": Rule(
        Role.MANAGER,
        own=Role.NONE,
        mutation=False,
        services=frozenset({"notification"}),
        summary="read a user's contact methods and notification rules (anyone: their own)",
    ),
    "notification.test": Rule(
        Role.MANAGER,
        own=Role.NONE,
        summary="send a test notification to a contact method (anyone: their own)",
    ),
    "silence.read": Rule(Role.VIEWER, mutation=False, summary="see silences"),
    "silence.create": Rule(
        Role.MANAGER, summary="silence a service's alerts (a silence of every service: admin)"
    ),
    "silence.expire": Rule(Role.MANAGER, summary="expire a silence"),
    "heartbeat.read": Rule(
        Role.VIEWER,
        mutation=False,
        summary="see heartbeat monitors and their last pings (never a ping URL's secret)",
    ),
    "heartbeat.rotate": Rule(
        Role.MANAGER,
        summary="issue a heartbeat's secret ping URL, voiding the previous one",
    ),
    "token.create": Rule(
        Role.ADMIN, own=Role.NONE, summary="create an API token (anyone: for themselves)"
    ),
    "token.read": Rule(
        Role.ADMIN,
        own=Role.NONE,
        mutation=False,
        summary="list API tokens (anyone: their own)",
    ),
    "token.revoke": Rule(
        Role.ADMIN, own=Role.NONE, summary="revoke an API token (anyone: their own)"
    ),
    "audit.read": Rule(Role.ADMIN, mutation=False, summary="read the audit log"),
    "insight.read": Rule(
        Role.VIEWER,
        mutation=False,
        summary="read one team's KPIs, SLA breaches, problems and review drafts (InsightService)",
    ),
    "report.read": Rule(
        Role.MANAGER,
        mutation=False,
        summary="read KPI and SLA reports across teams (needed on every team: its manager)",
    ),
    "gate.evaluate": Rule(
        Role.RESPONDER,
        summary="ask the deploy gate whether a service may be deployed now (audited)",
    ),
    "gate.override": Rule(
        Role.MANAGER,
        summary="override a failed or warned deploy-gate decision, with a reason",
    ),
    "gate.freeze": Rule(
        Role.MANAGER,
        summary="create or delete an ad-hoc deploy freeze (of every service: admin)",
    ),
}


def decide(principal: Principal, action: str, resource: Resource) -> Decision:
    """Whether ``principal`` may do ``action`` on ``resource``, and why (pure)."""
    rule = RULES.get(action)
    if rule is None:
        return Decision(False, f"unknown action {action!r}")
    if principal.kind is PrincipalKind.SERVICE:
        if principal.id.removeprefix(SERVICE_PREFIX) in rule.services:
            return Decision(True, f"service {principal.id!r} may {action}")
        return Decision(False, f"service {principal.id!r} may not {action}")
    held = principal.role_on(resource.teams)
    if held >= rule.role:
        where = "globally" if held is Role.ADMIN else f"on {_teams(resource)}"
        return Decision(True, f"{held.label} {where} may {action}")
    owns = (
        rule.own is not None
        and bool(resource.owner)
        and resource.owner == principal.id
        and principal.kind is PrincipalKind.USER
    )
    if owns:
        assert rule.own is not None
        if rule.own is Role.NONE or held >= rule.own:
            return Decision(True, f"{principal.id!r} owns {resource.kind} {resource.id!r}")
        return Decision(
            False,
            f"{action} of one's own {resource.kind} needs {rule.own.label} on "
            f"{_teams(resource)}; {principal.id!r} holds {held.label if held else 'no role'}",
        )
    if principal.scope < rule.role and principal.role_on(resource.teams) == principal.scope:
        return Decision(
            False, f"{action} needs {rule.role.label}; the token's scope is {principal.scope.label}"
        )
    if not resource.teams and rule.role < Role.ADMIN:
        return Decision(
            False, f"{action} on {resource.kind} {resource.id!r}, which no team owns, needs admin"
        )
    have = f"holds {held.label}" if held else "holds no role"
    return Decision(
        False, f"{action} needs {rule.role.label} on {_teams(resource)}; {principal.id!r} {have}"
    )


def _teams(resource: Resource) -> str:
    if not resource.teams:
        return "every team"
    names = sorted(resource.teams)
    return ("team " if len(names) == 1 else "teams ") + ", ".join(repr(t) for t in names)


def is_mutation(action: str) -> bool:
    rule = RULES.get(action)
    return rule is None or rule.mutation
