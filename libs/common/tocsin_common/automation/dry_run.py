"""How often a rule would have fired over past incidents (pure; insight's
``automation_dry_run`` reads its store): "this rule would have fired N times in 30 days".

Decided as the live path decides (escalation's ``lifecycle.automation``): the rule's
matchers over the incident's labels and fields, its triggers, once per (incident, rule,
trigger), nothing for a suppressed incident.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..config.automation import AutomationRule
from .rules import IncidentFacts, Transition, idempotency_key, matching_rules

__all__ = ["DryRunResult", "PastIncident", "dry_run", "services_in_scope", "transitions"]

MAX_SAMPLE = 20


@dataclass(frozen=True)
class PastIncident:
    facts: IncidentFacts
    triggered_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    levels: tuple[tuple[int, datetime], ...] = ()  # (level reached, when), repeats included
    suppressed: bool = False  # no rule runs for a suppressed incident


@dataclass(frozen=True)
class DryRunResult:
    rule_id: str
    since: datetime
    until: datetime
    fires: int  # firings (each (incident, trigger) once)
    incidents: int  # distinct incidents it fired for
    by_trigger: dict[str, int] = field(default_factory=dict)
    sample: tuple[str, ...] = ()  # the first incident ids, at most MAX_SAMPLE

    @property
    def summary(self) -> str:
        seconds = (self.until - self.since).total_seconds()
        # days from a day on, else hours (a window of 61 minutes is not "1 day")
        count, unit = (round(seconds / 86400), "day") if seconds >= 86400 else (
            max(1, round(seconds / 3600)), "hour")  # fmt: skip
        times = "time" if self.fires == 1 else "times"
        units = unit if count == 1 else f"{unit}s"
        return f"rule {self.rule_id!r} would have fired {self.fires} {times} in {count} {units}"


def transitions(incident: PastIncident) -> Iterator[tuple[datetime, Transition]]:
    """Every transition the incident went through, with its time."""
    facts = incident.facts
    yield incident.triggered_at, Transition(facts, "triggered")
    if incident.acknowledged_at is not None:
        yield incident.acknowledged_at, Transition(facts, "acknowledged")
    if incident.resolved_at is not None:
        yield incident.resolved_at, Transition(facts, "resolved")
    for level, at in incident.levels:
        yield at, Transition(facts, "level", level)


def dry_run(
    rule: AutomationRule, incidents: Iterable[PastIncident], since: datetime, until: datetime
) -> DryRunResult:
    """Count the firings of ``rule`` over transitions in ``[since, until)``, once per key, as
    the live path would run them (a disabled rule is counted as if it were enabled)."""
    probe = rule.model_copy(update={"enabled": True})
    keys: set[str] = set()
    fired_for: dict[str, None] = {}
    by_trigger: Counter[str] = Counter()
    for incident in incidents:
        if incident.suppressed:
            continue
        for at, transition in sorted(transitions(incident), key=lambda t: t[0]):
            if not since <= at < until or not matching_rules((probe,), transition):
                continue
            key = idempotency_key(incident.facts.incident_id, rule.id, transition.trigger)
            if key in keys:
                continue
            keys.add(key)
            by_trigger[transition.trigger] += 1
            fired_for.setdefault(incident.facts.incident_id, None)
    return DryRunResult(
        rule_id=rule.id,
        since=since,
        until=until,
        fires=len(keys),
        incidents=len(fired_for),
        by_trigger=dict(sorted(by_trigger.items())),
        sample=tuple(list(fired_for)[:MAX_SAMPLE]),
    )


def services_in_scope(rule: AutomationRule, services: Sequence[str]) -> tuple[str, ...] | None:
    """The ``services`` the rule's ``service`` matchers admit (in their order), or None when
    it has none (it may match an incident of any service). The matchers see a service's
    name as they see an incident's ``service`` field, which wins over a label of that name."""
    matchers = [m for m in rule.matchers if m.name == "service"]
    if not matchers:
        return None
    return tuple(s for s in services if all(m.matches({"service": s}) for m in matchers))
