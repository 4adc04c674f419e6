"""The deploy gate: is it safe to deploy this service now? (pure: no I/O, time passed in).

:func:`evaluate` reads a plain snapshot of the world (:class:`GateState`, kept current from
the topics by whoever calls it) and the rules of every configured gate that applies to the
request (:class:`GateRules`), and answers a :class:`Decision`: ``pass``, ``warn`` or ``fail``
(the worst rule outcome), every rule's outcome and reason, and until when the answer holds
(the decision TTL, cut short by the next freeze boundary). See docs/change-control.md.

A dry run answers ``pass`` whatever the rules say (``evaluated_outcome`` carries what they
said), as Datadog's gates do in dry-run mode. A manager's :class:`GateOverride` (made by
:func:`make_override` from a failed or warned decision) turns later evaluations of the same
service, environment and version into ``pass`` until it expires, the rules still listed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ..config.change_control import (
    ChangeControl,
    DeployGate,
    GateOutcome,
    IncidentThreshold,
    SleepHours,
)
from .cron import parse_cron

__all__ = [
    "AdHocFreeze",
    "Decision",
    "ErrorBudget",
    "GateError",
    "GateOverride",
    "GateRequest",
    "GateRules",
    "GateState",
    "InFlightChange",
    "OnCallPerson",
    "OpenIncident",
    "Outcome",
    "RuleResult",
    "evaluate",
    "make_override",
    "with_override",
]

Outcome = Literal["pass", "warn", "fail"]
_OUTCOMES: tuple[Outcome, ...] = ("pass", "warn", "fail")
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
MAX_REASON_CHARS = 1000


class GateError(ValueError):
    """A request or override the gate refuses; the message names the field."""


@dataclass(frozen=True)
class GateRequest:
    """May ``version`` of ``service`` go to ``environment`` now? ``change_id``: the change
    this deploy is (it is not "another change in flight" of itself)."""

    service: str
    environment: str
    version: str = ""
    change_id: str = ""
    dry_run: bool = False
    evaluation_id: str = ""  # given by the caller; derived from the request and time if empty

    def __post_init__(self) -> None:
        for name in ("service", "environment"):
            if not getattr(self, name).strip():
                raise GateError(f"{name}: is required")
        for name in ("service", "environment", "version", "change_id", "evaluation_id"):
            if len(getattr(self, name)) > 255:
                raise GateError(f"{name}: longer than 255 characters")


@dataclass(frozen=True)
class OpenIncident:
    incident_id: str
    service: str
    urgency: str  # "high" | "low"
    priority: str | None = None
    title: str = ""


@dataclass(frozen=True)
class ErrorBudget:
    remaining_percent: float | None = None
    burn_rate: float | None = None


@dataclass(frozen=True)
class OnCallPerson:
    user_id: str
    time_zone: str = "UTC"
    sleep_hours: tuple[time, time] | None = None  # None: change_control.sleep_hours


@dataclass(frozen=True)
class InFlightChange:
    change_id: str
    service: str
    environment: str
    started_at: datetime
    summary: str = ""


@dataclass(frozen=True)
class AdHocFreeze:
    """A freeze created at runtime (by a person, with a reason)."""

    freeze_id: str
    start: datetime
    end: datetime
    author: str
    reason: str
    services: frozenset[str] = frozenset()  # empty: every service
    environments: frozenset[str] = frozenset()  # empty: every environment

    def covers(self, service: str, environment: str) -> bool:
        return (not self.services or service in self.services) and (
            not self.environments or environment in self.environments
        )


@dataclass(frozen=True)
class GateOverride:
    """A manager let ``version`` of ``service`` go to ``environment`` until ``expires_at``."""

    service: str
    environment: str
    version: str
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime
    evaluation_id: str
    overridden_outcome: Outcome

    def covers(self, request: GateRequest, now: datetime) -> bool:
        return (
            self.service == request.service
            and self.environment == request.environment
            and self.version == request.version
            and self.created_at <= now < self.expires_at
        )


@dataclass(frozen=True)
class GateState:
    """What the gate reads: a snapshot, kept current from the topics by the caller."""

    open_incidents: tuple[OpenIncident, ...] = ()
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # transitive
    error_budgets: Mapping[str, ErrorBudget] = field(default_factory=dict)
    on_call: Mapping[str, tuple[OnCallPerson, ...]] = field(default_factory=dict)
    changes_in_flight: tuple[InFlightChange, ...] = ()
    freezes: tuple[AdHocFreeze, ...] = ()
    overrides: tuple[GateOverride, ...] = ()
    # Inputs the caller could not read, and why ("on_call", "changes_in_flight"): their
    # rules warn instead of deciding on nothing.
    unknown: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GateRules:
    """The configured gates that apply to one request, and the settings around them.
    ``priority_order``: priority ids, highest first (``insight.priorities``)."""

    gates: tuple[DeployGate, ...]
    decision_ttl: timedelta = timedelta(minutes=5)
    sleep_hours: tuple[time, time] = (time(22, 0), time(8, 0))
    priority_order: tuple[str, ...] = ()

    @classmethod
    def for_request(
        cls, section: ChangeControl, request: GateRequest, priority_order: Sequence[str] = ()
    ) -> GateRules:
        sleep: SleepHours = section.sleep_hours
        return cls(
            gates=tuple(
                g for g in section.gates if g.applies_to(request.service, request.environment)
            ),
            decision_ttl=section.decision_ttl,
            sleep_hours=(sleep.start, sleep.end),
            priority_order=tuple(priority_order),
        )


@dataclass(frozen=True)
class RuleResult:
    rule: str  # e.g. "prod-freeze.freeze_window:weekend", "adhoc_freeze:f-1"
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class Decision:
    evaluation_id: str
    service: str
    environment: str
    version: str
    change_id: str
    outcome: Outcome  # what the caller acts on
    evaluated_outcome: Outcome  # what the rules said (differs in a dry run or an override)
    results: tuple[RuleResult, ...]
    evaluated_at: datetime
    valid_until: datetime
    dry_run: bool = False
    override: GateOverride | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the REST API answers (and an Argo Rollouts ``web`` metric reads:
        ``jsonPath: "{$.outcome}"``)."""
        override = None
        if self.override is not None:
            override = {
                "actor": self.override.actor,
                "reason": self.override.reason,
                "created_at": _iso(self.override.created_at),
                "expires_at": _iso(self.override.expires_at),
                "overridden_outcome": self.override.overridden_outcome,
            }
        return {
            "evaluation_id": self.evaluation_id,
            "service": self.service,
            "environment": self.environment,
            "version": self.version,
            "change_id": self.change_id,
            "outcome": self.outcome,
            "passed": self.outcome != "fail",
            "evaluated_outcome": self.evaluated_outcome,
            "dry_run": self.dry_run,
            "rules": [
                {"rule": r.rule, "outcome": r.outcome, "reason": r.reason} for r in self.results
            ],
            "evaluated_at": _iso(self.evaluated_at),
            "valid_until": _iso(self.valid_until),
            "override": override,
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _worst(outcomes: Iterable[str]) -> Outcome:
    return _OUTCOMES[max((_RANK[o] for o in outcomes), default=0)]


def _as(setting: GateOutcome) -> Outcome:
    return "pass" if setting == "off" else setting


class _Evaluation:
    """Collects rule results and the earliest time the answer may change."""

    def __init__(self, now: datetime, horizon: datetime) -> None:
        self.now = now
        self.horizon = horizon
        self.changes_at = horizon
        self.results: list[RuleResult] = []

    def add(self, rule: str, outcome: Outcome, reason: str) -> None:
        self.results.append(RuleResult(rule, outcome, reason[:MAX_REASON_CHARS]))

    def boundary(self, at: datetime) -> None:
        if self.now < at < self.changes_at:
            self.changes_at = at


# -- the rules ---------------------------------------------------------------------------------


def _freeze_windows(ev: _Evaluation, gate: DeployGate) -> None:
    now = ev.now
    for window in gate.freeze_windows:
        name = f"{gate.id}.freeze_window:{window.name}"
        schedule = parse_cron(window.cron)
        zone = ZoneInfo(window.time_zone)
        started = schedule.last_fire(zone, now, now - window.duration)
        if started is not None and now < started + window.duration:
            end = started + window.duration
            ev.boundary(end)
            local = end.astimezone(zone)
            why = f": {window.reason}" if window.reason else ""
            ev.add(
                name,
                window.outcome,
                f"in freeze window {window.name!r} until {local:%Y-%m-%d %H:%M} "
                f"{window.time_zone}{why}",
            )
        else:
            ev.add(name, "pass", f"outside freeze window {window.name!r}")
        upcoming = schedule.next_fire(zone, now, ev.horizon)
        if upcoming is not None:
            ev.boundary(upcoming)


def _adhoc_freezes(ev: _Evaluation, request: GateRequest, freezes: Iterable[AdHocFreeze]) -> None:
    for freeze in freezes:
        if not freeze.covers(request.service, request.environment):
            continue
        if freeze.start <= ev.now < freeze.end:
            ev.boundary(freeze.end)
            ev.add(
                f"adhoc_freeze:{freeze.freeze_id}",
                "fail",
                f"frozen by {freeze.author} until {_iso(freeze.end)}: {freeze.reason}",
            )
        elif ev.now < freeze.start:
            ev.boundary(freeze.start)


def _threshold_met(
    threshold: IncidentThreshold | None, incident: OpenIncident, order: Sequence[str]
) -> tuple[bool, str]:
    if threshold is None:
        return False, ""
    if threshold.urgency is not None and (threshold.urgency == "low" or incident.urgency == "high"):
        return True, f"urgency {incident.urgency}"
    if threshold.priority is not None and incident.priority in order:
        if threshold.priority not in order:
            return False, ""
        if order.index(incident.priority) <= order.index(threshold.priority):
            return True, f"priority {incident.priority}"
    return False, ""


def _open_incidents(
    ev: _Evaluation, gate: DeployGate, request: GateRequest, state: GateState, rules: GateRules
) -> None:
    rule = gate.open_incidents
    if rule is None:
        return
    name = f"{gate.id}.open_incidents"
    order = rules.priority_order
    for threshold in (rule.fail_at, rule.warn_at):
        if threshold is not None and threshold.priority not in (None, *order):
            ev.add(
                f"{name}:priority",
                "warn",
                f"priority {threshold.priority!r} is not one of insight.priorities "
                f"({', '.join(order) or 'none defined'}); it cannot be checked",
            )
    watched = {request.service}
    if rule.include_dependencies:
        watched.update(state.dependencies.get(request.service, ()))
    found: list[tuple[Outcome, str]] = []
    relevant = [i for i in state.open_incidents if i.service in watched]
    for incident in sorted(relevant, key=lambda i: (i.service, i.incident_id)):
        where = (
            "on the service"
            if incident.service == request.service
            else f"on dependency {incident.service!r}"
        )
        levels: tuple[tuple[Outcome, IncidentThreshold | None], ...] = (
            ("fail", rule.fail_at),
            ("warn", rule.warn_at),
        )
        for outcome, threshold in levels:
            met, why = _threshold_met(threshold, incident, order)
            if met:
                found.append((outcome, f"incident {incident.incident_id} ({why}) is open {where}"))
                break
    if not found:
        scope = "the service or its dependencies" if rule.include_dependencies else "the service"
        ev.add(name, "pass", f"no open incident at the threshold on {scope}")
        return
    worst = _worst(outcome for outcome, _ in found)
    shown = [why for outcome, why in found if outcome == worst]
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    ev.add(name, worst, "; ".join(shown[:5]) + more)


def _error_budget(
    ev: _Evaluation, gate: DeployGate, request: GateRequest, state: GateState
) -> None:
    rule = gate.error_budget
    if rule is None:
        return
    name = f"{gate.id}.error_budget"
    budget = state.error_budgets.get(request.service, ErrorBudget())
    checks: list[tuple[Outcome, str]] = []
    left = budget.remaining_percent
    rate = budget.burn_rate
    unknown: list[str] = []
    if rule.fail_below_percent is not None or rule.warn_below_percent is not None:
        if left is None:
            unknown.append("error budget left")
        elif rule.fail_below_percent is not None and left < rule.fail_below_percent:
            checks.append(
                ("fail", f"{left:g}% of the error budget left, below {rule.fail_below_percent:g}%")
            )
        elif rule.warn_below_percent is not None and left < rule.warn_below_percent:
            checks.append(
                ("warn", f"{left:g}% of the error budget left, below {rule.warn_below_percent:g}%")
            )
    if rule.fail_above_burn_rate is not None or rule.warn_above_burn_rate is not None:
        if rate is None:
            unknown.append("burn rate")
        elif rule.fail_above_burn_rate is not None and rate > rule.fail_above_burn_rate:
            checks.append(("fail", f"burn rate {rate:g} above {rule.fail_above_burn_rate:g}"))
        elif rule.warn_above_burn_rate is not None and rate > rule.warn_above_burn_rate:
            checks.append(("warn", f"burn rate {rate:g} above {rule.warn_above_burn_rate:g}"))
    if unknown:
        checks.append(
            (_as(rule.when_unknown), f"no {' or '.join(unknown)} known for {request.service!r}")
        )
    if not checks:
        parts = []
        if left is not None:
            parts.append(f"{left:g}% of the error budget left")
        if rate is not None:
            parts.append(f"burn rate {rate:g}")
        ev.add(name, "pass", ", ".join(parts) or "no threshold set")
        return
    worst = _worst(outcome for outcome, _ in checks)
    ev.add(name, worst, "; ".join(why for _, why in checks))


def _asleep(person: OnCallPerson, default: tuple[time, time], now: datetime) -> bool:
    start, end = person.sleep_hours or default
    local = now.astimezone(ZoneInfo(person.time_zone)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _next_wake_boundary(
    person: OnCallPerson, default: tuple[time, time], now: datetime
) -> datetime:
    # The next local time the person's sleep starts or ends (the answer may change then).
    zone = ZoneInfo(person.time_zone)
    local = now.astimezone(zone)
    candidates = []
    for moment in person.sleep_hours or default:
        for days in (0, 1):
            day = local.date() + timedelta(days=days)
            at = datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)
            if at > now:
                candidates.append(at)
    return min(candidates)


def _on_call(
    ev: _Evaluation, gate: DeployGate, request: GateRequest, state: GateState, rules: GateRules
) -> None:
    rule = gate.on_call
    if rule is None:
        return
    name = f"{gate.id}.on_call"
    if "on_call" in state.unknown:
        ev.add(name, "warn", f"who is on call is unknown: {state.unknown['on_call']}")
        return
    people = state.on_call.get(request.service, ())
    if not people:
        ev.add(name, _as(rule.nobody_on_call), f"nobody is on call for {request.service!r}")
        return
    for person in people:
        ev.boundary(_next_wake_boundary(person, rules.sleep_hours, ev.now))
    awake = [p.user_id for p in people if not _asleep(p, rules.sleep_hours, ev.now)]
    if awake:
        ev.add(name, "pass", f"on call and awake: {', '.join(awake)}")
        return
    asleep = ", ".join(f"{p.user_id} ({p.time_zone})" for p in people)
    ev.add(name, _as(rule.all_asleep), f"everyone on call is in their sleep hours: {asleep}")


def _changes_in_flight(
    ev: _Evaluation, gate: DeployGate, request: GateRequest, state: GateState
) -> None:
    rule = gate.changes_in_flight
    if rule is None:
        return
    name = f"{gate.id}.changes_in_flight"
    if "changes_in_flight" in state.unknown:
        why = state.unknown["changes_in_flight"]
        ev.add(name, "warn", f"changes in flight are unknown: {why}")
        return
    busy: list[str] = []
    stale: list[str] = []
    for change in sorted(state.changes_in_flight, key=lambda c: (c.started_at, c.change_id)):
        if change.service != request.service or change.change_id == request.change_id:
            continue
        if rule.same_environment_only and change.environment != request.environment:
            continue
        if ev.now - change.started_at >= rule.stale_after:
            stale.append(change.change_id)
        else:
            busy.append(f"{change.change_id} (started {_iso(change.started_at)})")
            ev.boundary(change.started_at + rule.stale_after)
    note = f"; ignored as stale: {', '.join(stale)}" if stale else ""
    if busy:
        ev.add(name, _as(rule.outcome), "another change is in flight: " + ", ".join(busy) + note)
    else:
        ev.add(name, "pass", "no other change in flight" + note)


# -- evaluation and overrides ------------------------------------------------------------------


def _evaluation_id(request: GateRequest, now: datetime) -> str:
    text = "\x1f".join(
        (request.service, request.environment, request.version, request.change_id, _iso(now))
    )
    return "gate-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def evaluate(request: GateRequest, state: GateState, rules: GateRules, now: datetime) -> Decision:
    """Decide on ``request`` at ``now`` (timezone-aware)."""
    if now.tzinfo is None:
        raise GateError("now: must be timezone-aware")
    ev = _Evaluation(now, now + rules.decision_ttl)
    _adhoc_freezes(ev, request, state.freezes)
    for gate in rules.gates:
        _freeze_windows(ev, gate)
        _open_incidents(ev, gate, request, state, rules)
        _error_budget(ev, gate, request, state)
        _on_call(ev, gate, request, state, rules)
        _changes_in_flight(ev, gate, request, state)
    if not ev.results:
        ev.add(
            "gates",
            "pass",
            f"no gate rule applies to {request.service!r} in {request.environment!r}",
        )
    evaluated = _worst(r.outcome for r in ev.results)
    outcome: Outcome = evaluated
    override = None
    if evaluated != "pass":
        override = next((o for o in state.overrides if o.covers(request, now)), None)
        if override is not None:
            outcome = "pass"
            ev.boundary(override.expires_at)
    if request.dry_run:
        outcome = "pass"
    return Decision(
        evaluation_id=request.evaluation_id or _evaluation_id(request, now),
        service=request.service,
        environment=request.environment,
        version=request.version,
        change_id=request.change_id,
        outcome=outcome,
        evaluated_outcome=evaluated,
        results=tuple(ev.results),
        evaluated_at=now,
        valid_until=ev.changes_at,
        dry_run=request.dry_run,
        override=override,
    )


def make_override(
    decision: Decision, actor: str, reason: str, now: datetime, ttl: timedelta
) -> GateOverride:
    """A manager's override of a decision that failed or warned (who may override is the
    access policy's answer, asked by the caller). Raises :class:`GateError` when it is moot
    (the decision passed, or was a dry run) or a field is missing."""
    if not actor.strip():
        raise GateError("actor: is required")
    if not reason.strip():
        raise GateError("reason: is required (say why the gate may be passed)")
    if len(reason) > MAX_REASON_CHARS:
        raise GateError(f"reason: {len(reason):,} characters, at most {MAX_REASON_CHARS:,}")
    if decision.dry_run:
        raise GateError("evaluation_id: a dry run decides nothing; there is nothing to override")
    if decision.evaluated_outcome == "pass":
        raise GateError("evaluation_id: the gate passed; there is nothing to override")
    if ttl <= timedelta(0):
        raise GateError("ttl: must be positive")
    return GateOverride(
        service=decision.service,
        environment=decision.environment,
        version=decision.version,
        actor=actor,
        reason=reason.strip(),
        created_at=now,
        expires_at=now + ttl,
        evaluation_id=decision.evaluation_id,
        overridden_outcome=decision.evaluated_outcome,
    )


def with_override(decision: Decision, override: GateOverride) -> Decision:
    """The decision as the override changes it (what the override's caller answers)."""
    return replace(decision, outcome="pass", override=override)
