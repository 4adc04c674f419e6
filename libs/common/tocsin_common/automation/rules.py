"""Which automation rules fire for an incident transition, and what each would do (pure).

An incident's transition (triggered, acknowledged, resolved, escalation reached level N) is
matched against every enabled rule of the ``automation`` section: the rule's matchers
(Alertmanager syntax, RE2) see the incident's labels plus ``service``, ``urgency``,
``severity`` and ``priority`` (these four win over labels of the same name). Each firing
gets an idempotency key per (incident, rule, trigger): a redelivered event, a replay or a
second pass through the same level (a policy's repeat) runs the action once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import jinja2

from ..config.automation import TEMPLATE_ENV, AutomationRule, parse_trigger

__all__ = [
    "AutomationError",
    "HttpRequestPlan",
    "IncidentCommandPlan",
    "IncidentFacts",
    "PlannedAction",
    "Transition",
    "TriggerKind",
    "idempotency_key",
    "label_set",
    "matches",
    "matching_rules",
    "plan",
    "render",
    "template_context",
]

TriggerKind = Literal["triggered", "acknowledged", "resolved", "level"]
MAX_KEY_PART = 128


class AutomationError(ValueError):
    """A rule that cannot run for this incident (a template naming what is not there)."""


@dataclass(frozen=True)
class IncidentFacts:
    """What a rule may match and a template may read about an incident."""

    incident_id: str
    service: str
    title: str
    urgency: str
    severity: str = ""
    priority: str = ""
    status: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    url: str = ""


@dataclass(frozen=True)
class Transition:
    """One incident transition: ``kind``, and for ``level`` the level reached (1-based)."""

    incident: IncidentFacts
    kind: TriggerKind
    level: int = 0

    @property
    def trigger(self) -> str:
        """As written in a rule's ``on``: ``triggered`` ... or ``level 2``."""
        return f"level {self.level}" if self.kind == "level" else self.kind


def label_set(incident: IncidentFacts) -> dict[str, str]:
    """The labels a rule's matchers see."""
    labels = dict(incident.labels)
    labels.update(
        service=incident.service,
        urgency=incident.urgency,
        severity=incident.severity,
        priority=incident.priority,
    )
    return labels


def _fires_on(rule: AutomationRule, transition: Transition) -> bool:
    return any(parse_trigger(t) == (transition.kind, transition.level) for t in rule.on)


def matches(rule: AutomationRule, incident: IncidentFacts) -> bool:
    """Whether every matcher of ``rule`` matches the incident (its triggers aside)."""
    labels = label_set(incident)
    return all(m.matches(labels) for m in rule.matchers)


def matching_rules(rules: Iterable[AutomationRule], transition: Transition) -> list[AutomationRule]:
    """The enabled rules that fire for ``transition``, in configuration order."""
    labels = label_set(transition.incident)
    return [
        rule
        for rule in rules
        if rule.enabled
        and _fires_on(rule, transition)
        and all(m.matches(labels) for m in rule.matchers)
    ]


def idempotency_key(incident_id: str, rule_id: str, trigger: str) -> str:
    """The key of one firing: equal for the same (incident, rule, trigger), else different.
    Readable when short; ids too long for a key are hashed."""
    parts = [incident_id, rule_id, trigger.replace(" ", "-")]
    if any(len(p) > MAX_KEY_PART or "/" in p for p in parts):
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
        return f"automation/{digest}"
    return "automation/" + "/".join(parts)


def template_context(transition: Transition, rule_id: str) -> dict[str, Any]:
    incident = transition.incident
    return {
        "incident": {
            "id": incident.incident_id,
            "service": incident.service,
            "title": incident.title,
            "urgency": incident.urgency,
            "severity": incident.severity,
            "priority": incident.priority,
            "status": incident.status,
            "labels": dict(incident.labels),
            "url": incident.url,
        },
        "trigger": transition.trigger,
        "level": transition.level,
        "rule": rule_id,
    }


def render(template: str, context: Mapping[str, Any], rule_id: str, field_name: str) -> str:
    """A rule's template rendered in the sandbox; :class:`AutomationError` names the rule
    and field when it reads something that is not there."""
    try:
        return TEMPLATE_ENV.from_string(template).render(context)
    except jinja2.TemplateError as exc:
        raise AutomationError(f"automation rule {rule_id!r}: action.{field_name}: {exc}") from None


@dataclass(frozen=True)
class HttpRequestPlan:
    url: str
    method: str
    body: str
    content_type: str
    signed: bool
    timeout_seconds: float


@dataclass(frozen=True)
class IncidentCommandPlan:
    command: Literal["note", "priority", "resolve"]
    text: str = ""
    priority: str = ""


@dataclass(frozen=True)
class PlannedAction:
    """What one firing does, once (by ``key``), after approval if ``requires_approval``."""

    key: str
    rule_id: str
    incident_id: str
    trigger: str
    requires_approval: bool
    planned_at: datetime
    http: HttpRequestPlan | None = None
    command: IncidentCommandPlan | None = None
    approval_ttl: timedelta = timedelta(hours=1)
    # Whom to ask for the approval, and how: (user id, contact method id), planned by
    # escalation from who is on call (docs/automation.md#approval).
    approvers: tuple[tuple[str, str], ...] = ()


def plan(rule: AutomationRule, transition: Transition, now: datetime) -> PlannedAction:
    """The action ``rule`` takes for ``transition`` (templates rendered)."""
    context = template_context(transition, rule.id)
    action = rule.action
    http = None
    command = None
    if action.type == "http":
        http = HttpRequestPlan(
            url=action.url,
            method=action.method,
            body=render(action.body, context, rule.id, "body"),
            content_type=action.content_type,
            signed=action.signed,
            timeout_seconds=action.timeout.total_seconds(),
        )
    else:
        command = IncidentCommandPlan(
            command=action.command,
            text=render(action.text, context, rule.id, "text"),
            priority=action.priority or "",
        )
    incident_id = transition.incident.incident_id
    return PlannedAction(
        key=idempotency_key(incident_id, rule.id, transition.trigger),
        rule_id=rule.id,
        incident_id=incident_id,
        trigger=transition.trigger,
        requires_approval=rule.requires_approval,
        planned_at=now,
        http=http,
        command=command,
        approval_ttl=rule.approval_ttl,
    )
