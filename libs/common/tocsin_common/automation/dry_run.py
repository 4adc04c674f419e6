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

from ..config.automation import AutomationRule, parse_trigger
from .rules import IncidentFacts, Transition, idempotency_key, matches

__all__ = [
    "DryRunResult",
    "PastIncident",
    "Tally",
    "dry_run",
    "services_in_scope",
    "transitions",
]

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


class Tally:
    """The dry run's count, fed incidents in as many batches as wanted (each incident once):
    a long window is read a batch at a time, never whole."""

    def __init__(self, rule: AutomationRule, since: datetime, until: datetime) -> None:
        self.rule, self.since, self.until = rule, since, until
        self._wanted = {parse_trigger(t) for t in rule.on}
        self._keys: set[str] = set()
        self._sample: list[str] = []
        self._incidents = 0
        self._by_trigger: Counter[str] = Counter()

    def add(self, incidents: Iterable[PastIncident]) -> None:
        """A transition fires when it is one of the rule's triggers and the incident
        matches every matcher (``matching_rules``' two tests; the matchers see the incident,
        not the transition, so they are decided once per incident)."""
        for incident in incidents:
            if incident.suppressed:
                continue
            triggers = {
                transition.trigger
                for at, transition in transitions(incident)
                if (transition.kind, transition.level) in self._wanted
                and self.since <= at < self.until
            }
            if not triggers or not matches(self.rule, incident.facts):
                continue
            fired = False
            for trigger in sorted(triggers):
                key = idempotency_key(incident.facts.incident_id, self.rule.id, trigger)
                if key in self._keys:
                    continue
                self._keys.add(key)
                self._by_trigger[trigger] += 1
                fired = True
            if fired:
                self._incidents += 1
                if len(self._sample) < MAX_SAMPLE:
                    self._sample.append(incident.facts.incident_id)

    def result(self) -> DryRunResult:
        return DryRunResult(
            rule_id=self.rule.id,
            since=self.since,
            until=self.until,
            fires=len(self._keys),
            incidents=self._incidents,
            by_trigger=dict(sorted(self._by_trigger.items())),
            sample=tuple(self._sample),
        )


def dry_run(
    rule: AutomationRule, incidents: Iterable[PastIncident], since: datetime, until: datetime
) -> DryRunResult:
    """Count the firings of ``rule`` over transitions in ``[since, until)``, once per key, as
    the live path would run them (a disabled rule is counted as if it were enabled)."""
    tally = Tally(rule, since, until)
    tally.add(incidents)
    return tally.result()


def services_in_scope(rule: AutomationRule, services: Sequence[str]) -> tuple[str, ...] | None:
    """The ``services`` the rule's ``service`` matchers admit (in their order), or None when
    it has none (it may match an incident of any service). The matchers see a service's
    name as they see an incident's ``service`` field, which wins over a label of that name."""
    matchers = [m for m in rule.matchers if m.name == "service"]
    if not matchers:
        return None
    return tuple(s for s in services if all(m.matches({"service": s}) for m in matchers))
