"""The decision function as a table: (principal, action, resource) -> allowed, and why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tocsin_common.auth.directory import (
    BOOTSTRAP_ADMIN,
    contact_resource,
    heartbeat_resource,
    incident_resource,
    principal_for,
    schedule_teams,
)
from tocsin_common.auth.policy import (
    RULES,
    Principal,
    PrincipalKind,
    Resource,
    Role,
    decide,
    is_mutation,
)
from tocsin_common.auth.service_credentials import (
    service_credential,
    verify_service_credential,
)
from tocsin_common.auth.tokens import looks_like_token, new_token, token_hash
from tocsin_common.config.loader import ConfigError, parse_config

U = PrincipalKind.USER


def user(uid: str, admin: bool = False, scope: Role = Role.ADMIN, **roles: Role) -> Principal:
    return Principal(uid, U, team_roles=roles, admin=admin, scope=scope)


SRE_INCIDENT = Resource("incident", "i1", frozenset({"sre"}))
SRE_SILENCE = Resource("silence", "s1", frozenset({"sre"}))
GLOBAL_SILENCE = Resource("silence", "s2", frozenset())
SRE_SCHEDULE_OWN = Resource("override", "o1", frozenset({"sre"}), owner="rita")
SRE_SCHEDULE_OTHER = Resource("override", "o2", frozenset({"sre"}), owner="max")
RITA_CONTACT = Resource("contact", "rita/hook", frozenset({"sre"}), owner="rita")
TOKEN_OF_RITA = Resource("token", "rita", owner="rita")
SRE_HEARTBEAT = Resource("heartbeat", "nightly", frozenset({"sre"}))
SRE_POLICY = Resource("escalation_policy", "sre-policy", frozenset({"sre"}))
UNOWNED_HEARTBEAT = Resource("heartbeat", "cron")  # its service has no team

viewer = user("vic", sre=Role.VIEWER)
rita = user("rita", sre=Role.RESPONDER)
max_ = user("max", sre=Role.MANAGER)
outsider = user("olga", other=Role.RESPONDER)
admin = user("ann", admin=True)
read_only_manager = user("max", scope=Role.VIEWER, sre=Role.MANAGER)
notification = Principal("service:notification", PrincipalKind.SERVICE)
ingest = Principal("service:alert-ingest", PrincipalKind.SERVICE)
insight = Principal("service:insight", PrincipalKind.SERVICE)

TABLE = [
    # incidents: read for viewers, work for responders, on the owning team only
    (viewer, "incident.read", SRE_INCIDENT, True),
    (viewer, "incident.acknowledge", SRE_INCIDENT, False),
    (rita, "incident.acknowledge", SRE_INCIDENT, True),
    (rita, "incident.resolve", SRE_INCIDENT, True),
    (rita, "incident.snooze", SRE_INCIDENT, True),
    (rita, "incident.reassign", SRE_INCIDENT, True),
    (rita, "incident.note", SRE_INCIDENT, True),
    (outsider, "incident.read", SRE_INCIDENT, False),
    (outsider, "incident.acknowledge", SRE_INCIDENT, False),
    (admin, "incident.resolve", SRE_INCIDENT, True),
    (read_only_manager, "incident.read", SRE_INCIDENT, True),
    (read_only_manager, "incident.acknowledge", SRE_INCIDENT, False),
    # overrides: managers for anyone, responders for themselves
    (rita, "override.create", SRE_SCHEDULE_OWN, True),
    (rita, "override.create", SRE_SCHEDULE_OTHER, False),
    (rita, "override.delete", SRE_SCHEDULE_OWN, True),
    (viewer, "override.create", Resource("override", "o3", frozenset({"sre"}), "vic"), False),
    (max_, "override.create", SRE_SCHEDULE_OTHER, True),
    (outsider, "override.create", Resource("override", "o4", frozenset({"sre"}), "olga"), False),
    # silences: managers of the service's team; every service at once: admins
    (rita, "silence.create", SRE_SILENCE, False),
    (max_, "silence.create", SRE_SILENCE, True),
    (max_, "silence.expire", SRE_SILENCE, True),
    (max_, "silence.create", GLOBAL_SILENCE, False),
    (admin, "silence.create", GLOBAL_SILENCE, True),
    (read_only_manager, "silence.create", SRE_SILENCE, False),
    (viewer, "silence.read", SRE_SILENCE, True),
    # contact data: the user, their team's managers, admins, notification
    (rita, "contact.read", RITA_CONTACT, True),
    (viewer, "contact.read", RITA_CONTACT, False),
    (outsider, "contact.read", RITA_CONTACT, False),
    (max_, "contact.read", RITA_CONTACT, True),
    (admin, "contact.read", RITA_CONTACT, True),
    (notification, "contact.read", RITA_CONTACT, True),
    (ingest, "contact.read", RITA_CONTACT, False),
    (notification, "incident.acknowledge", SRE_INCIDENT, False),
    (rita, "notification.test", RITA_CONTACT, True),
    (outsider, "notification.test", RITA_CONTACT, False),
    # heartbeats: viewers see them, managers of the service's team issue ping URLs
    (viewer, "heartbeat.read", SRE_HEARTBEAT, True),
    (outsider, "heartbeat.read", SRE_HEARTBEAT, False),
    (viewer, "heartbeat.rotate", SRE_HEARTBEAT, False),
    (rita, "heartbeat.rotate", SRE_HEARTBEAT, False),
    (max_, "heartbeat.rotate", SRE_HEARTBEAT, True),
    (read_only_manager, "heartbeat.rotate", SRE_HEARTBEAT, False),
    (outsider, "heartbeat.rotate", SRE_HEARTBEAT, False),
    (max_, "heartbeat.rotate", UNOWNED_HEARTBEAT, False),
    (admin, "heartbeat.rotate", UNOWNED_HEARTBEAT, True),
    (ingest, "heartbeat.rotate", SRE_HEARTBEAT, False),
    # tokens: one's own, or admin
    (rita, "token.create", TOKEN_OF_RITA, True),
    (max_, "token.create", TOKEN_OF_RITA, False),
    (admin, "token.create", TOKEN_OF_RITA, True),
    (rita, "token.revoke", TOKEN_OF_RITA, True),
    (rita, "audit.read", Resource("audit"), False),
    (admin, "audit.read", Resource("audit"), True),
    (max_, "report.read", Resource("report", "", frozenset({"sre"})), True),
    (rita, "report.read", Resource("report", "", frozenset({"sre"})), False),
    (admin, "no.such.action", SRE_INCIDENT, False),
    # insight asks who a policy pages now (the deploy gate's on-call rule), and no more
    (insight, "oncall.read", SRE_POLICY, True),
    (insight, "schedule.read", SRE_POLICY, False),
    (insight, "contact.read", Resource("contact", "rita", frozenset({"sre"}), "rita"), False),
    (insight, "incident.read", SRE_INCIDENT, False),
    (notification, "oncall.read", SRE_POLICY, False),
    (viewer, "oncall.read", SRE_POLICY, True),
    (outsider, "oncall.read", SRE_POLICY, False),
]


@pytest.mark.parametrize(
    "principal, action, resource, allowed",
    TABLE,
    ids=[f"{p.id}-{a}-{r.kind}:{r.id}-{'allow' if ok else 'deny'}" for p, a, r, ok in TABLE],
)
def test_decision_table(
    principal: Principal, action: str, resource: Resource, allowed: bool
) -> None:
    decision = decide(principal, action, resource)
    assert decision.allowed is allowed, decision.reason
    assert decision.reason


def test_denials_say_what_is_needed() -> None:
    assert (
        "needs responder on team 'sre'; 'vic' holds viewer"
        in decide(viewer, "incident.acknowledge", SRE_INCIDENT).reason
    )
    assert (
        "token's scope is viewer" in decide(read_only_manager, "silence.create", SRE_SILENCE).reason
    )
    assert (
        "which no team owns, needs admin" in decide(max_, "silence.create", GLOBAL_SILENCE).reason
    )


def test_every_rule_is_documented_in_security_md() -> None:
    """docs/security.md's role table is the decision table: same actions, same roles."""
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z._]+)` \| ([a-z]+) \|", doc, re.MULTILINE))
    assert rows == {action: rule.role.label for action, rule in RULES.items()}


def test_reads_are_not_mutations() -> None:
    assert not is_mutation("incident.read") and is_mutation("incident.resolve")
    assert is_mutation("something.unknown")


CONFIG = """
version: 1
services:
  - {id: web, name: Web, team: sre, escalation_policy: p}
  - {id: db, name: DB, escalation_policy: q}
teams:
  - {id: sre, name: SRE, members: [rita], managers: [max], viewers: [vic]}
users:
  - {id: rita, name: Rita, email: rita@example.com}
  - {id: max, name: Max, email: max@example.com}
  - {id: vic, name: Vic, email: vic@example.com}
schedules:
  - id: rota
    name: Rota
    time_zone: UTC
    layers: [{start: "2026-01-05T09:00:00", rotation: daily, users: [rita]}]
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: schedule, id: rota}]}]}
  - {id: q, name: Q, levels: [{delay: 5m, targets: [{type: user, id: rita}]}]}
heartbeats:
  - {id: nightly, service: web, interval: 24h}
  - {id: cron, service: db, interval: 1h}
access:
  admins: [max]
  service_accounts:
    - {id: ci, name: CI, roles: [{team: sre, role: responder}]}
"""


def test_principals_and_resources_come_from_the_config() -> None:
    config = parse_config(CONFIG)
    rita_p = principal_for(config, "rita", U)
    assert rita_p is not None and dict(rita_p.team_roles) == {"sre": Role.RESPONDER}
    max_p = principal_for(config, "max", U)
    assert max_p is not None and max_p.admin
    vic_p = principal_for(config, "vic", U)
    assert vic_p is not None and dict(vic_p.team_roles) == {"sre": Role.VIEWER}
    ci = principal_for(config, "ci", PrincipalKind.SERVICE_ACCOUNT)
    assert ci is not None and dict(ci.team_roles) == {"sre": Role.RESPONDER}
    boot = principal_for(config, BOOTSTRAP_ADMIN, PrincipalKind.SERVICE_ACCOUNT)
    assert boot is not None and boot.admin
    assert principal_for(config, "gone", U) is None
    assert incident_resource(config, "i", "web").teams == {"sre"}
    assert incident_resource(config, "i", "db").teams == frozenset()  # admins only
    assert schedule_teams(config, "rota") == {"sre"}  # via web's policy p
    assert contact_resource(config, "rita", "hook").owner == "rita"
    assert heartbeat_resource(config, "nightly") == Resource(
        "heartbeat", "nightly", frozenset({"sre"})
    )
    assert heartbeat_resource(config, "cron").teams == frozenset()  # db has no team
    assert heartbeat_resource(config, "gone").teams == frozenset()


@pytest.mark.parametrize(
    "patch, problem",
    [
        ("team: sre, escalation_policy: p", "team: nope, escalation_policy: p"),
        ("managers: [max]", "managers: [nobody]"),
        ("admins: [max]", "admins: [nobody]"),
        ("{team: sre, role: responder}", "{team: nope, role: responder}"),
        ("{team: sre, role: responder}", "{team: sre, role: admin}"),
        ("{id: ci, name: CI", "{id: rita, name: CI"),
    ],
)
def test_access_config_errors_name_the_field(patch: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(CONFIG.replace(patch, problem, 1))
    text = str(e.value)
    assert re.search(r"(team|managers|admins|roles|id)", text), text


def test_tokens_are_prefixed_random_and_kept_as_a_hash() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("tocsin_") and looks_like_token(a)
    assert len(token_hash(a)) == 64 and token_hash(a) != token_hash(b)
    assert not looks_like_token("tocsin_short") and not looks_like_token("Bearer x" * 9)


def test_service_credentials_verify_only_with_the_secret() -> None:
    secret = b"s" * 32
    credential = service_credential(secret, "notification")
    assert verify_service_credential(secret, credential) == "notification"
    assert verify_service_credential(b"t" * 32, credential) is None
    forged = credential.replace("notification", "escalation")
    assert verify_service_credential(secret, forged) is None
    with pytest.raises(ValueError, match="unknown service"):
        service_credential(secret, "mallory")
