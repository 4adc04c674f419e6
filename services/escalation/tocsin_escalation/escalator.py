"""Applies escalation decisions: reacts to incident events and fired timers, and turns the
pure decisions of lifecycle.py into pages, commands and timers. Thin on purpose.

Incident events are handled a consumer batch at a time. Each event's pages, commands and
timeline entries (the levels reached, on incidents.timeline) are handed to the producer at
once, while its Redis writes (escalation state, timers, the projection's "applied" mark and
the entries on the projection's timeline) are staged in a :class:`StagedWrites`; once
every record of the batch is acknowledged by the broker, the consumer calls
:meth:`Escalator.write_batch` and they are written in one atomic round trip, before the
offsets are committed. So:

- an event is marked applied only after its effects are durable: a crash before that
  replays it, and its effects are idempotent (timer ids, command ids, entry ids and page
  idempotency keys derive from the event), so the replay redoes them harmlessly;
- a level reached reaches the timeline here, in the batch that decided it: it does not go
  through correlation as a command to come back as another event (only state changes —
  unacknowledge, resolve — are commands);
- later events of a batch, and timers firing meanwhile, read the staged state and
  incident, not Redis's older ones;
- an event that cannot change escalation (an alert joined, a note, a page's outcome) costs
  no Redis read at all: only its projection write, staged with the others.

Timers fire one at a time outside batches and write at once (the timer loop acknowledges a
timer only after its handler returned).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from google.protobuf.message import Message
from redis.asyncio import Redis
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.automation.rules import PlannedAction
from tocsin_common.clock import Clock
from tocsin_common.config import ConfigStore
from tocsin_common.kafka import BadRecord, EventProducer
from tocsin_common.statuspage.notices import Notice
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import (
    INCIDENTS_COMMANDS,
    INCIDENTS_TIMELINE,
    NOTIFICATIONS_REQUESTS,
    Topic,
)

from tocsin_escalation import lifecycle
from tocsin_escalation.lifecycle import (
    CommandSpec,
    Effects,
    EntrySpec,
    EscalationState,
    PlannedReminder,
    TimerSpec,
    reminder_group,
)
from tocsin_escalation.policy import PlannedPage
from tocsin_escalation.projection import IncidentProjection
from tocsin_escalation.stores import EscalationStateStore, OverrideStore
from tocsin_escalation.timers import ClaimedTimer, RedisTimerStore, Timer, to_ms

log = logging.getLogger("tocsin.escalation")


@dataclass
class StagedWrites:
    """A batch's Redis writes, held until its Kafka records are durable, in event order."""

    events: list[incident_pb2.IncidentEvent] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    # What the projection applies, in order: an event, or an entry (of which incident, on
    # which service) that follows the event that decided it.
    projection: list[incident_pb2.IncidentEvent | tuple[incident_pb2.IncidentEvent, str, str]] = (
        field(default_factory=list)
    )
    incidents: dict[str, incident_pb2.Incident] = field(default_factory=dict)  # the latest
    states: dict[str, EscalationState] = field(default_factory=dict)
    # Cancels (a timer group) and schedules, in the order they were decided: a cancel must
    # not undo a timer that a later event scheduled.
    timer_ops: list[str | list[Timer]] = field(default_factory=list)

    def add_event(self, event: incident_pb2.IncidentEvent) -> None:
        self.events.append(event)
        self.projection.append(event)
        self.event_ids.add(event.event_id)
        self.incidents[event.incident.incident_id] = event.incident

    def add_entries(
        self, incident: incident_pb2.Incident, entries: list[incident_pb2.IncidentEvent]
    ) -> None:
        for entry in entries:
            self.projection.append((entry, incident.incident_id, incident.service_id))

    def add_effects(self, incident_id: str, effects: Effects) -> None:
        if effects.cancel_escalation:
            self.timer_ops.append(incident_id)
        if effects.cancel_auto_resolve:
            self.timer_ops.append(f"{incident_id}:auto")
        if effects.cancel_reminder:
            self.timer_ops.append(reminder_group(incident_id))
        if effects.timers:
            self.timer_ops.append(_timers(effects))
        if effects.state is not None:
            self.states[incident_id] = effects.state


class Escalator:
    def __init__(
        self,
        config: ConfigStore,
        producer: EventProducer,
        redis: Redis,
        projection: IncidentProjection,
        timers: RedisTimerStore,
        states: EscalationStateStore,
        overrides: OverrideStore,
        clock: Clock,
    ) -> None:
        self._config = config
        self._producer = producer
        self._redis = redis
        self._projection = projection
        self._timers = timers
        self._states = states
        self._overrides = overrides
        self._clock = clock
        self._staged = StagedWrites()
        # One decision at a time per incident in this process (an event and a timer of the
        # same incident must not interleave between reading and writing its state).
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        event = incident_pb2.IncidentEvent()
        try:
            event.ParseFromString(record.value or b"")
        except Exception as e:
            raise BadRecord(f"undecodable IncidentEvent: {e}") from None
        if not event.incident.incident_id:
            raise BadRecord("incident.incident_id: missing")
        if not event.event_id:
            raise BadRecord("event_id: missing")
        if event.event_id in self._staged.event_ids:
            return
        if event.type not in lifecycle.ESCALATION_EVENTS:
            # Nothing to decide; applying it is idempotent (a replay is skipped there).
            self._staged.add_event(event)
            return
        incident_id = event.incident.incident_id
        try:
            async with self._locks[incident_id]:
                config = self._config.current
                schedules = lifecycle.schedules_of(config, event.incident.escalation_policy_id)
                seen, state, overrides = await self._read(event.event_id, incident_id, schedules)
                if seen:
                    return
                effects = lifecycle.on_event(config, event, state, self._clock.now(), overrides)
                _, entries = await self._produce(event.incident, effects)
                self._staged.add_effects(incident_id, effects)
                self._staged.add_event(event)
                self._staged.add_entries(event.incident, entries)
        finally:
            self._release(incident_id)
        _log_effects(incident_id, effects)

    async def _read(
        self, event_id: str, incident_id: str, schedules: list[str]
    ) -> tuple[bool, EscalationState, lifecycle.Overrides]:
        """Whether the event was applied, the incident's state, and the overrides of the
        schedules its policy names: one round trip."""
        staged_state = self._staged.states.get(incident_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            self._projection.queue_seen(pipe, event_id)
            if staged_state is None:
                self._states.queue_get(pipe, incident_id)
            for schedule_id in schedules:
                self._overrides.queue_list(pipe, schedule_id)
            found = await pipe.execute()
        seen = bool(found[0])
        if staged_state is None:
            state = EscalationState.from_json(found[1])
            rest = found[2:]
        else:
            state, rest = staged_state, found[1:]
        decode = self._overrides.decode
        overrides = {sid: decode(raw) for sid, raw in zip(schedules, rest, strict=True)}
        return seen, state, overrides

    async def write_batch(self) -> None:
        """Write what the batch staged (its records are durable now): one transaction."""
        staged = self._staged
        if not staged.events:
            return
        async with AsyncExitStack() as held:
            # A timer of these incidents must not write their state in between.
            for incident_id in sorted(staged.states):
                await held.enter_async_context(self._locks[incident_id])
            async with self._redis.pipeline(transaction=True) as pipe:
                for op in staged.timer_ops:
                    if isinstance(op, str):
                        self._timers.queue_cancel_group(pipe, op)
                    else:
                        self._timers.queue_schedule(pipe, op)
                for incident_id, state in staged.states.items():
                    self._states.queue_put(pipe, incident_id, state)
                for applied in staged.projection:
                    if isinstance(applied, tuple):
                        self._projection.queue_append(pipe, *applied)
                    else:
                        self._projection.queue_apply(pipe, applied)
                self._projection.queue_prune(pipe)
                await pipe.execute()
            self._staged = StagedWrites()
        for incident_id in staged.states:
            self._release(incident_id)

    def drop_batch(self) -> None:
        """Forget what the batch staged: its records did not all reach Kafka, and the
        consumer reads the batch again."""
        self._staged = StagedWrites()

    async def fire(self, claimed: ClaimedTimer) -> None:
        """The timer loop's handler: raises to have the timer fire again after its lease."""
        try:
            timer = TimerSpec.from_payload(claimed.payload)
        except Exception:
            log.error("dropping an unreadable timer", extra={"timer_id": claimed.timer_id})
            return
        incident_id = timer.incident_id
        try:
            async with self._locks[incident_id]:
                incident = self._staged.incidents.get(incident_id)
                if incident is None:
                    incident = await self._projection.get(incident_id)
                state = self._staged.states.get(incident_id)
                if state is None:
                    state = await self._states.get(incident_id)
                config = self._config.current
                policy = incident.escalation_policy_id if incident is not None else ""
                overrides = await self._overrides.for_schedules(
                    lifecycle.schedules_of(config, policy)
                )
                effects = lifecycle.on_timer(
                    config, timer, incident, state, self._clock.now(), overrides
                )
                if incident is not None:
                    await self._apply_now(incident, effects)
                if effects.dropped:
                    log.info(
                        "timer %s: %s",
                        timer.kind,
                        effects.dropped,
                        extra={"incident_id": incident_id},
                    )
        finally:
            self._release(incident_id)
        _log_effects(incident_id, effects)

    def _release(self, incident_id: str) -> None:
        lock = self._locks.get(incident_id)
        if lock is not None and not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
            del self._locks[incident_id]

    async def _produce(
        self, incident: incident_pb2.Incident, effects: Effects
    ) -> tuple[list[asyncio.Future[Any]], list[incident_pb2.IncidentEvent]]:
        """Hand the pages, commands and timeline entries to the producer: their futures
        say when durable; the entries go to the projection's timeline too."""
        now = self._clock.now()
        futures = []
        for page in effects.pages:
            futures.append(
                await self._producer.enqueue(
                    NOTIFICATIONS_REQUESTS, page.user_id, _request(incident, page, now)
                )
            )
        for reminder in effects.reminders:
            futures.append(
                await self._producer.enqueue(
                    NOTIFICATIONS_REQUESTS,
                    reminder.user_id,
                    reminder_request(incident, reminder, now),
                )
            )
        for command in effects.commands:
            futures.append(
                await self._producer.enqueue(
                    INCIDENTS_COMMANDS, incident.service_id, _command(incident, command, now)
                )
            )
        entries = [_entry(incident, spec, now) for spec in effects.entries]
        for entry in entries:
            futures.append(
                await self._producer.enqueue(INCIDENTS_TIMELINE, incident.incident_id, entry)
            )
        for action in effects.actions:
            topic, key, message = automation_record(incident, action, now)
            futures.append(await self._producer.enqueue(topic, key, message))
        for notice in effects.notices:
            futures.append(
                await self._producer.enqueue(
                    NOTIFICATIONS_REQUESTS, notice.update_id, notice_request(notice, now)
                )
            )
        return futures, entries

    async def _apply_now(self, incident: incident_pb2.Incident, effects: Effects) -> None:
        """A timer's effects: its records durable first, then its Redis writes."""
        futures, entries = await self._produce(incident, effects)
        for future in futures:
            await future
        incident_id = incident.incident_id
        async with self._redis.pipeline(transaction=True) as pipe:
            for entry in entries:
                self._projection.queue_append(pipe, entry, incident_id, incident.service_id)
            if effects.cancel_escalation:
                self._timers.queue_cancel_group(pipe, incident_id)
            if effects.cancel_auto_resolve:
                self._timers.queue_cancel_group(pipe, f"{incident_id}:auto")
            if effects.cancel_reminder:
                self._timers.queue_cancel_group(pipe, reminder_group(incident_id))
            self._timers.queue_schedule(pipe, _timers(effects))
            if effects.state is not None:
                self._states.queue_put(pipe, incident_id, effects.state)
            await pipe.execute()
        if effects.state is not None and incident_id in self._staged.states:
            # A batch staged this incident's state: it writes this one, the newer.
            self._staged.states[incident_id] = effects.state


def _timers(effects: Effects) -> list[Timer]:
    return [Timer(t.timer_id, to_ms(t.due.timestamp()), t.to_payload()) for t in effects.timers]


def _log_effects(incident_id: str, effects: Effects) -> None:
    if effects.pages or effects.reminders or effects.commands or effects.actions or effects.notices:
        log.info(
            "escalation: %d page(s), %d reminder(s), %d command(s), %d timer(s), "
            "%d automation action(s)",
            len(effects.pages),
            len(effects.reminders),
            len(effects.commands),
            len(effects.timers),
            len(effects.actions),
            extra={"incident_id": incident_id},
        )


def automation_record(
    incident: incident_pb2.Incident, action: PlannedAction, now: datetime
) -> tuple[Topic, str, Message]:
    """Where a planned automation action goes: an HTTP action to notification (on
    notifications.requests, keyed by incident), an incident command to correlation."""
    if action.http is not None:
        http = action.http
        request = notification_pb2.NotificationRequest(
            request_id=str(uuid.uuid4()),
            idempotency_key=action.key,
            incident=incident,
            urgency=incident.urgency,
            automation=notification_pb2.AutomationAction(
                rule_id=action.rule_id,
                trigger=action.trigger,
                method=http.method,
                url=http.url,
                body=http.body,
                content_type=http.content_type,
                signed=http.signed,
                timeout_ms=int(http.timeout_seconds * 1000),
                requires_approval=action.requires_approval,
                approval_ttl_ms=int(action.approval_ttl.total_seconds() * 1000),
                approvers=[
                    notification_pb2.Approver(user_id=user, contact_method_id=method)
                    for user, method in action.approvers
                ],
            ),
        )
        set_timestamp(request.requested_at, now)
        return NOTIFICATIONS_REQUESTS, incident.incident_id, request
    assert action.command is not None
    command = incident_pb2.IncidentCommand(
        # The same command for the same firing: a replay repeats it, not a second note.
        command_id=lifecycle.derived_id(action.key, "command"),
        incident_id=incident.incident_id,
        service_id=incident.service_id,
        actor=automation_actor(action.rule_id),
    )
    planned = action.command
    if planned.command == "note":
        command.note.text = planned.text
    elif planned.command == "resolve":
        command.resolve.SetInParent()
    else:
        command.priority.priority = planned.priority
    set_timestamp(command.requested_at, now)
    return INCIDENTS_COMMANDS, incident.service_id, command


def notice_request(notice: Notice, now: datetime) -> notification_pb2.NotificationRequest:
    """A status update for every subscriber of its components: notification fans it out.
    Public fields only: no incident, no person (keyed by the update's id)."""
    request = notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=f"status/{notice.update_id}",
        status_notice=notification_pb2.StatusNotice(
            kind="update",
            update_id=notice.update_id,
            status=notice.status,
            title=notice.title,
            message=notice.message,
            component_ids=list(notice.component_ids),
        ),
    )
    set_timestamp(request.status_notice.posted_at, notice.posted_at)
    set_timestamp(request.requested_at, now)
    return request


def automation_actor(rule_id: str) -> str:
    return f"automation:{rule_id}"


def _request(
    incident: incident_pb2.Incident, page: PlannedPage, now: datetime
) -> notification_pb2.NotificationRequest:
    request = notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=page.idempotency_key(incident.incident_id),
        incident=incident,
        user_id=page.user_id,
        contact_method_id=page.contact_method_id,
        escalation_level=page.level,
        escalation_loop=page.loop,
        rule_index=page.rule_index,
        urgency=incident.urgency,
    )
    set_timestamp(request.requested_at, now)
    return request


def reminder_request(
    incident: incident_pb2.Incident, reminder: PlannedReminder, now: datetime
) -> notification_pb2.NotificationRequest:
    """A reminder to one responder, as notification delivers it (keyed by the person, as
    pages are)."""
    request = notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=reminder.idempotency_key,
        incident=incident,
        user_id=reminder.user_id,
        contact_method_id=reminder.contact_method_id,
        rule_index=reminder.rule_index,
        urgency=incident.urgency,
        reminder=notification_pb2.Reminder(kind=reminder.kind, text=reminder.text),
    )
    set_timestamp(request.requested_at, now)
    return request


def _entry(
    incident: incident_pb2.Incident, spec: EntrySpec, now: datetime
) -> incident_pb2.IncidentEvent:
    """The entry as incidents.timeline carries it: with the incident as escalation saw it
    (insight makes an incident's fact from any of its records; the projection's timeline
    gets the projection's own incident instead: tocsin_common.timeline)."""
    entry = incident_pb2.IncidentEvent(
        event_id=spec.entry_id,
        type=spec.event_type,  # type: ignore[arg-type]
        incident=incident,
        actor=spec.actor,
        message=spec.message,
    )
    set_timestamp(entry.at, now)
    return entry


def _command(
    incident: incident_pb2.Incident, spec: CommandSpec, now: datetime
) -> incident_pb2.IncidentCommand:
    command = incident_pb2.IncidentCommand(
        command_id=spec.command_id,
        incident_id=incident.incident_id,
        service_id=incident.service_id,
        actor=spec.actor,
    )
    if spec.kind == "unacknowledge":
        command.unacknowledge.SetInParent()
    elif spec.kind == "resolve":
        command.resolve.SetInParent()
    elif spec.kind == "timeline_entry":
        # An entry correlation must apply itself (levels reached are EntrySpecs instead).
        command.timeline_entry.type = spec.event_type  # type: ignore[assignment]
        command.timeline_entry.message = spec.message
    else:
        raise ValueError(
            f"command kind: {spec.kind!r} is not unacknowledge, resolve or timeline_entry"
        )
    set_timestamp(command.requested_at, now)
    return command
