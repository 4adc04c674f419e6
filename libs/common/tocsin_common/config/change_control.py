"""The ``change_control`` section: deploy-gate rules per service (docs/change-control.md).

Imported by :mod:`.model` for :class:`~.model.TocsinConfig`; the field types come from there.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from ..change.cron import CronError, parse_cron
from .durations import PositiveDuration, format_duration
from .model import Name, Ref, Slug, TimeOfDay, TimeZone, Urgency, _Model

__all__ = [
    "ChangeControl",
    "ChangesInFlightRule",
    "DeployGate",
    "ErrorBudgetRule",
    "FreezeWindow",
    "GateOutcome",
    "IncidentRule",
    "IncidentThreshold",
    "OnCallRule",
    "SleepHours",
]

# What a rule does when it is not met: fail the gate, warn, or nothing (the rule is off).
GateOutcome = Literal["fail", "warn", "off"]
_PRIORITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def _cron(value: str) -> str:
    try:
        parse_cron(value)
    except CronError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    return value


def _priority(value: str) -> str:
    if not _PRIORITY_RE.match(value):
        raise ValueError(
            f"invalid priority id {value!r}: 1 to 32 letters, digits, '-' and '_', e.g. 'P1'"
        )
    return value


def _freeze_length(value: timedelta) -> timedelta:
    if value > timedelta(days=366):
        raise ValueError(f"{value} is longer than a year (at most 366d)")
    return value


CronExpression = Annotated[str, AfterValidator(_cron)]
PriorityRef = Annotated[str, AfterValidator(_priority)]


class FreezeWindow(_Model):
    """No deploys from each time ``cron`` fires (local time in ``time_zone``) for
    ``duration`` (elapsed time, as Argo CD's sync windows)."""

    name: Name
    cron: CronExpression
    duration: Annotated[PositiveDuration, AfterValidator(_freeze_length)]
    time_zone: TimeZone = "UTC"
    outcome: Literal["fail", "warn"] = "fail"
    reason: str = Field(default="", max_length=1000)


class IncidentThreshold(_Model):
    """An open incident at or above ``priority`` (ranked as in ``insight.priorities``,
    first is highest) or at or above ``urgency`` (high > low). Set one or both."""

    priority: PriorityRef | None = None
    urgency: Urgency | None = None

    @model_validator(mode="after")
    def _something(self) -> IncidentThreshold:
        if self.priority is None and self.urgency is None:
            raise ValueError("priority, urgency: set at least one")
        return self


class IncidentRule(_Model):
    """Open incidents on the service (and, with ``include_dependencies``, on every service it
    depends on, directly or not) fail or warn the gate."""

    fail_at: IncidentThreshold | None = None
    warn_at: IncidentThreshold | None = None
    include_dependencies: bool = True


class ErrorBudgetRule(_Model):
    """Error budget left (percent of the SLO's budget) and burn rate, from insight."""

    fail_below_percent: float | None = Field(default=None, ge=0, le=100)
    warn_below_percent: float | None = Field(default=None, ge=0, le=100)
    fail_above_burn_rate: float | None = Field(default=None, gt=0)
    warn_above_burn_rate: float | None = Field(default=None, gt=0)
    when_unknown: GateOutcome = "warn"


class SleepHours(_Model):
    """A person's night, in their own time zone; ``end`` before ``start`` wraps past
    midnight (the two must differ)."""

    start: TimeOfDay = time(22, 0)
    end: TimeOfDay = time(8, 0)

    @model_validator(mode="after")
    def _some_night(self) -> SleepHours:
        if self.start == self.end:
            raise ValueError("start, end: equal, which would mean asleep all day or never")
        return self


class OnCallRule(_Model):
    """Someone must be on call for the service; and awake (outside their sleep hours)."""

    nobody_on_call: GateOutcome = "fail"
    all_asleep: GateOutcome = "warn"


class ChangesInFlightRule(_Model):
    """Another change started on the service and not yet finished. One started longer than
    ``stale_after`` ago and never finished is ignored (and said so)."""

    outcome: GateOutcome = "fail"
    same_environment_only: bool = True
    stale_after: PositiveDuration = timedelta(hours=2)


class DeployGate(_Model):
    """Rules for deploys of ``services`` (empty: every service) to ``environments`` (empty:
    any). Every gate that applies to a request is evaluated."""

    id: Slug
    services: tuple[Ref, ...] = ()
    environments: tuple[Name, ...] = ()
    freeze_windows: tuple[FreezeWindow, ...] = Field(default=(), max_length=100)
    open_incidents: IncidentRule | None = None
    error_budget: ErrorBudgetRule | None = None
    on_call: OnCallRule | None = None
    changes_in_flight: ChangesInFlightRule | None = None

    def applies_to(self, service_id: str, environment: str) -> bool:
        """Whether this gate covers a deploy of ``service_id`` to ``environment``."""
        return (not self.services or service_id in self.services) and (
            not self.environments or environment in self.environments
        )


class ChangeControl(_Model):
    """Deploy gates, how long a decision stays valid, and how long insight keeps the
    decisions it records (``gate_decisions``: overrides by evaluation id, change timelines)."""

    gates: tuple[DeployGate, ...] = ()
    decision_ttl: PositiveDuration = timedelta(minutes=5)
    sleep_hours: SleepHours = Field(default_factory=SleepHours)
    override_ttl: PositiveDuration = timedelta(hours=1)
    decision_retention: PositiveDuration = timedelta(days=90)

    @field_validator("decision_retention")
    @classmethod
    def _retention(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        # A decision must outlive what reads it: its validity, and an override asked of it.
        floor = max(
            info.data.get("decision_ttl", timedelta(0)), info.data.get("override_ttl", timedelta(0))
        )
        if value < floor:
            raise ValueError(
                f"{format_duration(value)} is shorter than decision_ttl or override_ttl "
                f"({format_duration(floor)}): a decision must be kept at least as long as it "
                "holds and can be overridden"
            )
        return value
