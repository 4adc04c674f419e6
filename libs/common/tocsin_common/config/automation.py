"""The ``automation`` section: actions run on incident transitions (docs/automation.md).

Imported by :mod:`.model` for :class:`~.model.TocsinConfig`; the field types come from there.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import AfterValidator, Field, model_validator

from .change_control import PriorityRef
from .durations import PositiveDuration
from .model import HttpUrl, Matcher, Slug, _Model

__all__ = [
    "TEMPLATE_ENV",
    "Automation",
    "AutomationRule",
    "HttpAction",
    "IncidentAction",
    "parse_trigger",
]

_TRIGGER_RE = re.compile(r"^(triggered|acknowledged|resolved)$|^level ([1-9][0-9]?|100)$")
# Body templates are user input run by Tocsin: a sandbox (no attribute tricks), undefined
# names are errors (a typo must not send an empty field to a runbook runner).
TEMPLATE_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def parse_trigger(value: str) -> tuple[str, int]:
    """``"level 2"`` -> ``("level", 2)``; ``"resolved"`` -> ``("resolved", 0)``."""
    match = _TRIGGER_RE.match(value.strip())
    if match is None:
        raise ValueError(
            f"invalid trigger {value!r}: one of triggered, acknowledged, resolved, "
            "or 'level N' (N from 1 to 100: escalation reached level N)"
        )
    if match.group(1):
        return match.group(1), 0
    return "level", int(match.group(2))


def _trigger(value: str) -> str:
    kind, level = parse_trigger(value)
    return f"level {level}" if kind == "level" else kind


def _template(value: str) -> str:
    try:
        TEMPLATE_ENV.parse(value)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"invalid template (line {exc.lineno}): {exc.message}") from None
    return value


Trigger = Annotated[str, AfterValidator(_trigger)]
Template = Annotated[str, AfterValidator(_template), Field(max_length=100_000)]


class HttpAction(_Model):
    """An HTTP request to a runbook runner; the body is a Jinja2 template over the incident
    (see docs/automation.md). Signed like webhooks unless ``signed: false``."""

    type: Literal["http"]
    url: HttpUrl
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    signed: bool = True
    body: Template = ""
    content_type: str = "application/json"
    timeout: PositiveDuration = timedelta(seconds=10)


class IncidentAction(_Model):
    """A command on the incident itself: add a note, set its priority, resolve it."""

    type: Literal["incident"]
    command: Literal["note", "priority", "resolve"]
    text: Template = ""
    priority: PriorityRef | None = None

    @model_validator(mode="after")
    def _arguments(self) -> IncidentAction:
        if self.command == "note" and not self.text:
            raise ValueError("text: a note needs text")
        if self.command == "priority" and self.priority is None:
            raise ValueError("priority: the priority command needs a priority")
        if self.command != "priority" and self.priority is not None:
            raise ValueError(f"priority: only for the priority command (this is {self.command!r})")
        return self


class AutomationRule(_Model):
    """When an incident matching every matcher makes one of ``on`` transitions, run
    ``action`` (after a person approves, with ``requires_approval``)."""

    id: Slug
    name: str = ""
    matchers: tuple[Matcher, ...] = Field(default=(), max_length=100)
    on: tuple[Trigger, ...] = Field(min_length=1, max_length=103)
    action: HttpAction | IncidentAction = Field(discriminator="type")
    requires_approval: bool = False
    approval_ttl: PositiveDuration = timedelta(hours=1)
    enabled: bool = True

    @model_validator(mode="after")
    def _approval(self) -> AutomationRule:
        if self.requires_approval and self.action.type != "http":
            raise ValueError(
                "requires_approval: only an http action waits for approval (an incident "
                "command is what a person would do by hand)"
            )
        return self


class Automation(_Model):
    """Automation rules, tried in order; every matching rule runs."""

    rules: tuple[AutomationRule, ...] = Field(default=(), max_length=1000)
