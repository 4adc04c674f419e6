"""The escalation state machine (pure): incident events and fired timers in, effects out.

An incident's escalation is a *run*: started when it triggers (or is unacknowledged,
reassigned, released, or its snooze ends), identified by the id of the event that started
it. A run pages level 1 at once and schedules a timer for each next level; every timer
carries its run, and a timer whose run is no longer the incident's current run is stale
and does nothing. So stopping escalation is "start another run (or none)"; cancelling the
timers in the store is housekeeping, not what makes it correct.

Loop numbers (part of every page's idempotency key) are ``pass`` for the run that starts
at TRIGGERED, and ``base + pass`` for later runs, where ``base`` is derived from the event
that started the run: a replayed event yields the same keys (notification drops the
repeat), a new run yields new ones (the person is paged again).

| event | effect |
|---|---|
| TRIGGERED, RELEASED | page level 1 now, level 2 after level 1's delay, ...; auto-resolve timer |
| HELD | no paging until RELEASED; auto-resolve timer |
| ACKNOWLEDGED | stop; schedule the ack timeout (service.ack_timeout) |
| UNACKNOWLEDGED | new run from level 1 |
| RESOLVED | stop; cancel everything, auto-resolve included |
| SNOOZED | stop; at snoozed_until, a new run from level 1 (whoever is on call then) |
| REASSIGNED | new run on the new policy, or on the one assigned user |
| STATUS_UPDATED | the reminder a cadence later (none after "resolved"); the update to subscribers |

A high-urgency incident on a service of the public status page is reminded of
(``status_page.update_reminders``) when it has had no public status update for its
urgency's cadence: a timer of its own group (it outlives acknowledgements), rescheduled by
each update, firing a STATUS_UPDATE_DUE timeline entry and then again a cadence later,
until the incident is resolved or its page status is. Each firing also reminds the
incident's responders (:func:`responders`: the level the run last paged, or the one person
it is assigned to) through notification, by their notification rules that page at once
(:func:`reminder_pages`), with idempotency keys derived from the firing: a timer that fires
again after a crash reminds nobody twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.automation.rules import (
    AutomationError,
    IncidentFacts,
    PlannedAction,
    Transition,
    TriggerKind,
    matching_rules,
    plan,
)
from tocsin_common.config import EscalationLevel, EscalationTarget, Service, TocsinConfig
from tocsin_common.statuspage.notices import Notice, affected_components

from tocsin_escalation.policy import PlannedPage, plan_users
from tocsin_escalation.schedule import OverrideSpan, resolve_targets

_NAMESPACE = uuid.UUID("1d7c8f5e-2b0a-4f43-9a7e-6c1e5d2b3a90")

LEVEL = "level"
RULE = "rule"
ACK_TIMEOUT = "ack_timeout"
SNOOZE_END = "snooze_end"
AUTO_RESOLVE = "auto_resolve"
UPDATE_REMINDER = "update_reminder"

ESCALATING = "escalating"
ACKNOWLEDGED = "acknowledged"
SNOOZED = "snoozed"
STOPPED = "stopped"

E = incident_pb2


# The incident events on_event acts on. Any other (an alert joined, a note, a page's
# outcome, ...) changes nothing in escalation: it needs no escalation state to decide that.
ESCALATION_EVENTS = frozenset(
    {
        E.INCIDENT_EVENT_TYPE_TRIGGERED,
        E.INCIDENT_EVENT_TYPE_HELD,
        E.INCIDENT_EVENT_TYPE_RELEASED,
        E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
        E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED,
        E.INCIDENT_EVENT_TYPE_RESOLVED,
        E.INCIDENT_EVENT_TYPE_SNOOZED,
        E.INCIDENT_EVENT_TYPE_REASSIGNED,
        E.INCIDENT_EVENT_TYPE_STATUS_UPDATED,
    }
)


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def loop_base(seed: str) -> int:
    """A loop number base for a run started by ``seed`` (stable; fits an int32 with passes)."""
    return 1000 * (1 + int(hashlib.sha256(seed.encode()).hexdigest()[:5], 16))


@dataclass(frozen=True)
class EscalationState:
    """What escalation remembers of one incident (JSON in Redis)."""

    run: str = ""
    phase: str = STOPPED
    loop_base: int = 0
    policy_id: str = ""
    user_id: str = ""  # escalation goes to this one person (reassigned to a user)
    quiet_unack: str = ""  # our own unacknowledge at snooze end: it must not restart again
    level: int = 0  # the level the run paged last (0: none yet, or a state of an older build)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> EscalationState:
        if not raw:
            return cls()
        data = json.loads(raw)
        # A field of a newer build is ignored (a rolling upgrade's replicas share states).
        return cls(**{k: v for k, v in data.items() if k in _STATE_FIELDS})


_STATE_FIELDS = frozenset(EscalationState.__dataclass_fields__)


@dataclass(frozen=True)
class TimerSpec:
    kind: str
    incident_id: str
    due: datetime
    run: str = ""
    level: int = 0
    pass_: int = 0
    user_id: str = ""
    rule_index: int = 0
    contact_method_id: str = ""

    @property
    def group(self) -> str:
        # The auto-resolve and reminder timers outlive acknowledgements: groups of their own.
        if self.kind == AUTO_RESOLVE:
            return f"{self.incident_id}:auto"
        if self.kind == UPDATE_REMINDER:
            return reminder_group(self.incident_id)
        return self.incident_id

    @property
    def timer_id(self) -> str:
        if self.kind in (AUTO_RESOLVE, UPDATE_REMINDER):
            return f"{self.group}|{self.kind}"  # one per incident: rescheduling replaces it
        return (
            f"{self.group}|{self.kind}|{self.run}|{self.level}|{self.pass_}|"
            f"{self.user_id}|{self.rule_index}"
        )

    def to_payload(self) -> bytes:
        data = asdict(self)
        data["due"] = self.due.astimezone(UTC).timestamp()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, raw: bytes) -> TimerSpec:
        data = json.loads(raw)
        data["due"] = datetime.fromtimestamp(float(data["due"]), UTC)
        return cls(**data)


def reminder_group(incident_id: str) -> str:
    return f"{incident_id}:remind"


@dataclass(frozen=True)
class CommandSpec:
    """An IncidentCommand to send on incidents.commands: a change of the incident's state,
    which correlation (its one writer) applies."""

    kind: str  # unacknowledge | resolve | timeline_entry (an entry correlation applies)
    command_id: str
    actor: str = "system"
    message: str = ""
    event_type: int = E.INCIDENT_EVENT_TYPE_UNSPECIFIED  # of a timeline_entry


@dataclass(frozen=True)
class EntrySpec:
    """A timeline entry that changes no state (a level reached): escalation records it
    itself, on incidents.timeline and on the projection's timeline."""

    entry_id: str
    message: str
    event_type: int = E.INCIDENT_EVENT_TYPE_ESCALATED
    actor: str = "system"


@dataclass(frozen=True)
class PlannedReminder:
    """A reminder to one responder by one of their notification rules (not a page: no
    level, never bundled with pages); its key derives from the reminder's firing."""

    user_id: str
    contact_method_id: str
    rule_index: int
    idempotency_key: str
    kind: str
    text: str


@dataclass
class Effects:
    state: EscalationState | None = None  # None: unchanged
    cancel_escalation: bool = False
    cancel_auto_resolve: bool = False
    cancel_reminder: bool = False
    pages: list[PlannedPage] = field(default_factory=list)
    reminders: list[PlannedReminder] = field(default_factory=list)
    timers: list[TimerSpec] = field(default_factory=list)
    commands: list[CommandSpec] = field(default_factory=list)
    entries: list[EntrySpec] = field(default_factory=list)
    actions: list[PlannedAction] = field(default_factory=list)  # automation firings
    notices: list[Notice] = field(default_factory=list)  # to the status page's subscribers
    dropped: str = ""  # why nothing happened (logs, metrics, tests)


Overrides = dict[str, list[OverrideSpan]]


def _urgency(incident: incident_pb2.Incident) -> str:
    return "low" if incident.urgency == E.URGENCY_LOW else "high"


def incident_facts(
    incident: incident_pb2.Incident, config: TocsinConfig | None = None
) -> IncidentFacts:
    """What automation rules match and their templates read of an incident. Its priority
    is the one a command set, else the one ``insight.priorities`` gives it (as insight's
    reports and the dry run see it); "" when neither."""
    severity = ""
    if incident.severity:
        severity = alert_pb2.Severity.Name(incident.severity).removeprefix("SEVERITY_").lower()
    status = E.IncidentStatus.Name(incident.status).removeprefix("INCIDENT_STATUS_").lower()
    priority = incident.priority
    if not priority and config is not None:
        priority = (
            config.insight.priority_for(
                incident.service_id, severity, _urgency(incident), incident.labels
            )
            or ""
        )
    return IncidentFacts(
        incident_id=incident.incident_id,
        service=incident.service_id,
        title=incident.title,
        urgency=_urgency(incident),
        severity=severity,
        priority=priority,
        status="" if status == "unspecified" else status,
        labels=dict(incident.labels),
    )


def approvers(
    config: TocsinConfig, users: Sequence[str], urgency: str
) -> tuple[tuple[str, str], ...]:
    """Whom to ask for an approval: each of ``users`` (once) by the contact methods their
    notification rules for ``urgency`` use at once (delay 0), else by their first rule's."""
    asks: list[tuple[str, str]] = []
    for user_id in dict.fromkeys(users):
        pages = plan_users(config, [user_id], 1, 0, urgency)
        now_pages = [p for p in pages if p.delay <= timedelta(0)] or pages[:1]
        for page in now_pages:
            if (user_id, page.contact_method_id) not in asks:
                asks.append((user_id, page.contact_method_id))
    return tuple(asks)


def on_call_at(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    level: int,
    now: datetime,
    overrides: Overrides,
) -> list[str]:
    """Who the incident's escalation pages at ``level`` (1-based; clamped to its levels)
    now: its assignee, or its policy's level's targets resolved."""
    state = EscalationState(
        policy_id=incident.escalation_policy_id, user_id=incident.assigned_user_id
    )
    try:
        levels, _ = _levels(config, state)
    except KeyError:
        return []
    if not levels:
        return []
    step = levels[min(max(level, 1), len(levels)) - 1]
    users = resolve_targets(config, [(t.type, t.id) for t in step.targets], now, overrides)
    return [u for u in users if _user_exists(config, u)]


def _approvers_on_call(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    now: datetime,
    overrides: Overrides,
) -> list[str]:
    """Who is on call at level 1 now, looked up only when some rule waits for approval
    (the look-up resolves schedules: not worth doing on every event for nothing)."""
    if incident.suppressed or not any(r.requires_approval for r in config.automation.rules):
        return []
    return on_call_at(config, incident, 1, now, overrides)


def automation(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    kind: TriggerKind,
    now: datetime,
    level: int = 0,
    responders: Sequence[str] = (),
) -> Effects:
    """The automation rules that fire for this transition, planned (docs/automation.md).
    A rule whose template cannot render for this incident is a timeline entry instead.
    ``responders``: whom an action that waits for approval asks (on call at the level)."""
    effects = Effects()
    if not config.automation.rules or incident.suppressed:
        return effects
    transition = Transition(incident_facts(incident, config), kind, level)
    for rule in matching_rules(config.automation.rules, transition):
        try:
            planned = plan(rule, transition, now)
            if planned.requires_approval and responders:
                planned = replace(
                    planned, approvers=approvers(config, responders, _urgency(incident))
                )
            effects.actions.append(planned)
        except AutomationError as error:
            effects.commands.append(
                CommandSpec(
                    "timeline_entry",
                    derived_id(incident.incident_id, rule.id, transition.trigger, "automation"),
                    actor=f"automation:{rule.id}",
                    message=f"automation did not run: {error}",
                    event_type=E.INCIDENT_EVENT_TYPE_NOTE_ADDED,
                )
            )
    return effects


def _with(effects: Effects, more: Effects) -> Effects:
    effects.actions += more.actions
    effects.commands += more.commands
    effects.entries += more.entries
    return effects


def _levels(
    config: TocsinConfig, state: EscalationState
) -> tuple[tuple[EscalationLevel, ...], int]:
    """The levels of the run and how many times it repeats."""
    if state.user_id:
        config.user(state.user_id)  # KeyError if unknown
        level = EscalationLevel(
            delay=timedelta(minutes=30),
            targets=(EscalationTarget(type="user", id=state.user_id),),
        )
        return (level,), 0
    policy = config.policy(state.policy_id)
    return policy.levels, policy.repeat


def schedules_of(config: TocsinConfig, policy_id: str) -> list[str]:
    """The schedules a policy's levels name (to load their runtime overrides)."""
    try:
        policy = config.policy(policy_id)
    except KeyError:
        return []
    return sorted({t.id for lvl in policy.levels for t in lvl.targets if t.type == "schedule"})


def page_level(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    state: EscalationState,
    level: int,
    pass_: int,
    now: datetime,
    base: datetime,
    overrides: Overrides,
    reason: str = "",
) -> Effects:
    """Page ``level`` of the run now; delayed rules and the next level become timers."""
    effects = Effects()
    try:
        levels, repeat = _levels(config, state)
    except KeyError as error:
        effects.dropped = f"cannot escalate: {error.args[0]}"
        return effects
    if level > len(levels):
        effects.dropped = f"level {level} no longer exists"
        return effects
    step = levels[level - 1]
    loop = state.loop_base + pass_
    users = resolve_targets(config, [(t.type, t.id) for t in step.targets], now, overrides)
    known = [u for u in users if _user_exists(config, u)]
    for page in plan_users(config, known, level, loop, _urgency(incident)):
        if page.delay <= timedelta(0):
            effects.pages.append(page)
        else:
            effects.timers.append(
                TimerSpec(
                    RULE,
                    incident.incident_id,
                    now + page.delay,
                    state.run,
                    level,
                    pass_,
                    page.user_id,
                    page.rule_index,
                    page.contact_method_id,
                )
            )
    if level < len(levels):
        nxt: tuple[int, int] | None = (level + 1, pass_)
    elif pass_ < repeat:
        nxt = (1, pass_ + 1)
    else:
        nxt = None
    if nxt is not None:
        effects.timers.append(
            TimerSpec(LEVEL, incident.incident_id, base + step.delay, state.run, nxt[0], nxt[1])
        )
    who = ", ".join(known) if known else "nobody (no one is on call)"
    text = f"escalated to level {level}"
    if pass_:
        text += f" (repeat {pass_})"
    text += f": paged {who}"
    if reason:
        text = f"{reason}; {text}"
    effects.entries.append(
        EntrySpec(
            derived_id(incident.incident_id, state.run, str(level), str(pass_), "escalated"),
            text,
        )
    )
    # Every pass through a level plans its rules again: the firing's key is the same, so
    # the action still runs once per (incident, rule, level).
    return _with(effects, automation(config, incident, "level", now, level, known))


def _user_exists(config: TocsinConfig, user_id: str) -> bool:
    try:
        config.user(user_id)
    except KeyError:
        return False
    return True


def _start_run(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    run: str,
    base_loop: int,
    now: datetime,
    overrides: Overrides,
    reason: str = "",
) -> Effects:
    state = EscalationState(
        run=run,
        phase=ESCALATING,
        loop_base=base_loop,
        policy_id=incident.escalation_policy_id,
        user_id=incident.assigned_user_id,
        level=1,
    )
    effects = page_level(config, incident, state, 1, 0, now, now, overrides, reason)
    effects.state = state
    effects.cancel_escalation = True
    return effects


def on_event(
    config: TocsinConfig,
    event: incident_pb2.IncidentEvent,
    state: EscalationState,
    now: datetime,
    overrides: Overrides,
) -> Effects:
    """What an incident event does to its escalation."""
    incident = event.incident
    kind = event.type
    if kind not in ESCALATION_EVENTS:
        return Effects(dropped="no escalation effect")
    service = _service(config, incident.service_id)
    if kind == E.INCIDENT_EVENT_TYPE_TRIGGERED:
        effects = Effects()
        if incident.suppressed or incident.held_by_incident_id:
            effects.state = EscalationState(phase=STOPPED, policy_id=incident.escalation_policy_id)
            effects.dropped = "suppressed or held: not paging"
        else:
            effects = _start_run(config, incident, event.event_id, 0, now, overrides)
        effects.timers += _auto_resolve(service, incident, now)
        if not incident.suppressed:
            created = _at(incident.created_at) if incident.HasField("created_at") else now
            effects.timers += _reminder(config, incident, created)
        responders = _approvers_on_call(config, incident, now, overrides)
        return _with(effects, automation(config, incident, "triggered", now, 0, responders))
    if kind == E.INCIDENT_EVENT_TYPE_STATUS_UPDATED:
        posted = _at(event.at) if event.HasField("at") else now
        notices = subscriber_notice(config, event, posted)
        if event.status_update.status == "resolved":
            return Effects(
                cancel_reminder=True, notices=notices, dropped="resolved on the status page"
            )
        if incident.status == E.INCIDENT_STATUS_RESOLVED:
            return Effects(notices=notices, dropped="incident resolved")
        return Effects(timers=_reminder(config, incident, posted), notices=notices)
    if kind == E.INCIDENT_EVENT_TYPE_HELD:
        # Held from paging by an upstream incident: RELEASED starts escalation.
        return Effects(
            state=EscalationState(phase=STOPPED, policy_id=incident.escalation_policy_id),
            timers=_auto_resolve(service, incident, now),
            dropped="held by an upstream incident",
        )
    if kind == E.INCIDENT_EVENT_TYPE_RELEASED:
        if incident.status != E.INCIDENT_STATUS_TRIGGERED:
            return Effects(dropped="released but not triggered")
        return _start_run(
            config,
            incident,
            event.event_id,
            loop_base(event.event_id),
            now,
            overrides,
            "released by the upstream incident",
        )
    if kind == E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED:
        effects = Effects(
            state=replace(state, run=event.event_id, phase=ACKNOWLEDGED, quiet_unack=""),
            cancel_escalation=True,
        )
        if service is not None and service.ack_timeout is not None:
            effects.timers.append(
                TimerSpec(
                    ACK_TIMEOUT, incident.incident_id, now + service.ack_timeout, event.event_id
                )
            )
        responders = _approvers_on_call(config, incident, now, overrides)
        return _with(effects, automation(config, incident, "acknowledged", now, 0, responders))
    if kind == E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED:
        if event.command_id and event.command_id == state.quiet_unack:
            # Our own, sent when a snooze ended: that run already paged.
            return Effects(state=replace(state, quiet_unack=""), dropped="snooze already re-paged")
        return _start_run(
            config,
            incident,
            event.event_id,
            loop_base(event.event_id),
            now,
            overrides,
            "acknowledgement timed out",
        )
    if kind == E.INCIDENT_EVENT_TYPE_RESOLVED:
        effects = Effects(
            state=replace(state, run="", phase=STOPPED, quiet_unack=""),
            cancel_escalation=True,
            cancel_auto_resolve=True,
            cancel_reminder=True,
        )
        responders = _approvers_on_call(config, incident, now, overrides)
        return _with(effects, automation(config, incident, "resolved", now, 0, responders))
    if kind == E.INCIDENT_EVENT_TYPE_SNOOZED:
        until = (
            incident.snoozed_until.ToDatetime(tzinfo=UTC)
            if incident.HasField("snoozed_until")
            else now
        )
        return Effects(
            state=replace(state, run=event.event_id, phase=SNOOZED, quiet_unack=""),
            cancel_escalation=True,
            timers=[TimerSpec(SNOOZE_END, incident.incident_id, until, event.event_id)],
        )
    if kind == E.INCIDENT_EVENT_TYPE_REASSIGNED:
        target = incident.assigned_user_id or incident.escalation_policy_id
        return _start_run(
            config,
            incident,
            event.event_id,
            loop_base(event.event_id),
            now,
            overrides,
            f"reassigned to {target}",
        )
    raise AssertionError(f"unhandled escalation event type {kind}")


def _auto_resolve(
    service: Service | None, incident: incident_pb2.Incident, now: datetime
) -> list[TimerSpec]:
    if service is None or service.auto_resolve_timeout is None:
        return []
    created = incident.created_at.ToDatetime(tzinfo=UTC) if incident.HasField("created_at") else now
    return [TimerSpec(AUTO_RESOLVE, incident.incident_id, created + service.auto_resolve_timeout)]


def _at(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _cadence(config: TocsinConfig, incident: incident_pb2.Incident) -> timedelta | None:
    """How long the incident may go without a public update: none unless the status page
    is on, the incident's service is on one of its components and its urgency has one."""
    page = config.status_page
    if not page.enabled or not any(incident.service_id in c.services for c in page.components):
        return None
    every: timedelta | None = getattr(page.update_reminders, _urgency(incident))
    return every


def subscriber_notice(
    config: TocsinConfig, event: incident_pb2.IncidentEvent, posted: datetime
) -> list[Notice]:
    """The status update for the page's subscribers: its public fields only, when the page
    is on and the incident's service is on one of its components."""
    components = affected_components(config.status_page, event.incident.service_id)
    if not components:
        return []
    update = event.status_update
    return [
        Notice(
            update_id=event.event_id,
            status=update.status,
            title=update.public_title,
            message=update.message,
            component_ids=components,
            posted_at=posted,
        )
    ]


def _reminder(
    config: TocsinConfig, incident: incident_pb2.Incident, since: datetime
) -> list[TimerSpec]:
    """The reminder timer a cadence after ``since`` (the opening, an update, a reminder)."""
    every = _cadence(config, incident)
    if every is None:
        return []
    return [TimerSpec(UPDATE_REMINDER, incident.incident_id, since + every)]


STATUS_UPDATE_DUE = "status_update_due"


def _span(every: timedelta) -> str:
    """A cadence in words: "30 minutes", "2 hours", "1 minute", "4 seconds"."""
    seconds = every.total_seconds()
    if seconds < 60:
        value, unit = seconds, "second"
    elif seconds < 3600 or seconds % 3600:
        value, unit = seconds / 60, "minute"
    else:
        value, unit = seconds / 3600, "hour"
    shown = f"{round(value, 1):g}"
    return f"{shown} {unit}{'' if shown == '1' else 's'}"


def reminder_text(every: timedelta) -> str:
    """What a status-update reminder tells a responder (notification adds the link)."""
    return (
        f"No public status update has been posted for {_span(every)}: post one for the status page."
    )


def responders(
    config: TocsinConfig,
    incident: incident_pb2.Incident,
    state: EscalationState,
    now: datetime,
    overrides: Overrides,
) -> list[str]:
    """Whom a reminder about the incident goes to: the one person it is assigned to, else
    whoever the level the run paged last pages now (its targets resolved at ``now``: the
    people on call at that level). Nobody before its first page (held, or suppressed)."""
    if not state.run:
        return []
    try:
        levels, _ = _levels(config, state)
    except KeyError:
        return []
    level = min(max(state.level, 1), len(levels))  # 0: a state written by an older build
    if not levels:
        return []
    targets: list[tuple[str, str]] = [(t.type, t.id) for t in levels[level - 1].targets]
    users = resolve_targets(config, targets, now, overrides)
    return [u for u in dict.fromkeys(users) if _user_exists(config, u)]


def reminder_pages(
    config: TocsinConfig, users: list[str], urgency: str, seed: str, kind: str, text: str
) -> list[PlannedReminder]:
    """One reminder per person by each of their notification rules for ``urgency`` that
    pages at once (delay 0), else by their first rule: a reminder is not escalated through
    their later rules. Keys: ``seed`` (the firing), the person and the rule."""
    found: list[PlannedReminder] = []
    for user_id in users:
        pages = plan_users(config, [user_id], 0, 0, urgency)
        now_pages = [p for p in pages if p.delay <= timedelta(0)] or pages[:1]
        for page in now_pages:
            found.append(
                PlannedReminder(
                    user_id,
                    page.contact_method_id,
                    page.rule_index,
                    f"{seed}:{user_id}:{page.rule_index}",
                    kind,
                    text,
                )
            )
    return found


def _service(config: TocsinConfig, service_id: str) -> Service | None:
    try:
        return config.service(service_id)
    except KeyError:
        return None


def on_timer(
    config: TocsinConfig,
    timer: TimerSpec,
    incident: incident_pb2.Incident | None,
    state: EscalationState,
    now: datetime,
    overrides: Overrides,
) -> Effects:
    """What a fired timer does (nothing when it is stale)."""
    if incident is None:
        return Effects(dropped="unknown incident")
    if incident.status == E.INCIDENT_STATUS_RESOLVED:
        return Effects(dropped="incident resolved")
    if timer.kind == AUTO_RESOLVE:
        return Effects(
            commands=[
                CommandSpec(
                    "resolve",
                    derived_id(incident.incident_id, "auto-resolve"),
                    message="auto-resolved after the service's auto_resolve_timeout",
                )
            ]
        )
    if timer.kind == UPDATE_REMINDER:
        every = _cadence(config, incident)
        if every is None:
            return Effects(dropped="no reminder cadence (any longer)")
        text = reminder_text(every)
        seed = f"{incident.incident_id}:reminder:{timer.due.astimezone(UTC).isoformat()}"
        users = responders(config, incident, state, now, overrides)
        reminders = reminder_pages(config, users, _urgency(incident), seed, STATUS_UPDATE_DUE, text)
        reminded = sorted({r.user_id for r in reminders})
        told = f"reminded {', '.join(reminded)}" if reminded else "nobody to remind"
        return Effects(
            timers=_reminder(config, incident, now),
            reminders=reminders,
            commands=[
                CommandSpec(
                    "timeline_entry",
                    derived_id(incident.incident_id, "update-reminder", timer.due.isoformat()),
                    actor="escalation",
                    message=(
                        f"no public status update for {_span(every)} "
                        f"(status_page.update_reminders): post one for the status page; {told}"
                    ),
                    event_type=E.INCIDENT_EVENT_TYPE_STATUS_UPDATE_DUE,
                )
            ],
        )
    if timer.run != state.run:
        return Effects(dropped="stale timer (escalation moved on)")
    if timer.kind == LEVEL:
        if state.phase != ESCALATING:
            return Effects(dropped=f"not escalating ({state.phase})")
        # Next levels count from when this one was due, unless it fired late (after an
        # outage): then from now, so levels do not all fire at once.
        base = timer.due if now - timer.due < timedelta(seconds=5) else now
        effects = page_level(
            config, incident, state, timer.level, timer.pass_, now, base, overrides
        )
        if not effects.dropped:
            effects.state = replace(state, level=timer.level)  # whom a reminder goes to
        return effects
    if timer.kind == RULE:
        if state.phase != ESCALATING:
            return Effects(dropped=f"not escalating ({state.phase})")
        return Effects(
            pages=[
                PlannedPage(
                    timer.user_id,
                    timer.contact_method_id,
                    timer.rule_index,
                    timedelta(0),
                    timer.level,
                    state.loop_base + timer.pass_,
                )
            ]
        )
    if timer.kind == ACK_TIMEOUT:
        if state.phase != ACKNOWLEDGED:
            return Effects(dropped=f"not acknowledged ({state.phase})")
        return Effects(
            commands=[
                CommandSpec(
                    "unacknowledge",
                    derived_id(incident.incident_id, timer.run, "ack-timeout"),
                    message="acknowledgement timed out",
                )
            ]
        )
    if timer.kind == SNOOZE_END:
        if state.phase != SNOOZED:
            return Effects(dropped=f"not snoozed ({state.phase})")
        run = derived_id(timer.run, "snooze-end")
        effects = _start_run(config, incident, run, loop_base(run), now, overrides, "snooze ended")
        # Back to triggered in correlation too; that UNACKNOWLEDGED must not page again.
        unack = derived_id(incident.incident_id, timer.run, "snooze-end")
        effects.commands.append(CommandSpec("unacknowledge", unack, message="snooze ended"))
        assert effects.state is not None
        effects.state = replace(effects.state, quiet_unack=unack)
        # The timers of this run are new; nothing of the snooze is left to cancel.
        effects.cancel_escalation = False
        return effects
    return Effects(dropped=f"unknown timer kind {timer.kind!r}")
