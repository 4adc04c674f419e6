"""Applies escalation decisions: reacts to incident events and fired timers, and turns the
pure decisions of lifecycle.py into pages, commands and timers. Thin on purpose.

Crash safety: an event's effects (cancel, produce, schedule, save state) all happen before
the event is marked applied in the projection, and each effect is idempotent (timer ids,
command ids and page idempotency keys are derived from the event), so a redelivered event
redoes them harmlessly instead of being skipped half-done.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.clock import Clock
from tocsin_common.config import ConfigStore
from tocsin_common.kafka import BadRecord, EventProducer
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import INCIDENTS_COMMANDS, NOTIFICATIONS_REQUESTS

from tocsin_escalation import lifecycle
from tocsin_escalation.lifecycle import CommandSpec, Effects, TimerSpec
from tocsin_escalation.policy import PlannedPage
from tocsin_escalation.projection import IncidentProjection
from tocsin_escalation.stores import EscalationStateStore, OverrideStore
from tocsin_escalation.timers import ClaimedTimer, Timer, TimerStore, to_ms

log = logging.getLogger("tocsin.escalation")


class Escalator:
    def __init__(
        self,
        config: ConfigStore,
        producer: EventProducer,
        projection: IncidentProjection,
        timers: TimerStore,
        states: EscalationStateStore,
        overrides: OverrideStore,
        clock: Clock,
    ) -> None:
        self._config = config
        self._producer = producer
        self._projection = projection
        self._timers = timers
        self._states = states
        self._overrides = overrides
        self._clock = clock
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
        if await self._projection.seen(event.event_id):
            return
        incident_id = event.incident.incident_id
        try:
            async with self._locks[incident_id]:
                config = self._config.current
                state = await self._states.get(incident_id)
                overrides = await self._overrides.for_schedules(
                    lifecycle.schedules_of(config, event.incident.escalation_policy_id)
                )
                effects = lifecycle.on_event(config, event, state, self._clock.now(), overrides)
                await self._apply(event.incident, effects)
        finally:
            self._release(incident_id)
        await self._projection.apply(event)

    async def fire(self, claimed: ClaimedTimer) -> None:
        """The timer loop's handler: raises to have the timer fire again after its lease."""
        try:
            timer = TimerSpec.from_payload(claimed.payload)
        except Exception:
            log.error("dropping an unreadable timer", extra={"timer_id": claimed.timer_id})
            return
        try:
            async with self._locks[timer.incident_id]:
                incident = await self._projection.get(timer.incident_id)
                state = await self._states.get(timer.incident_id)
                config = self._config.current
                policy = incident.escalation_policy_id if incident is not None else ""
                overrides = await self._overrides.for_schedules(
                    lifecycle.schedules_of(config, policy)
                )
                effects = lifecycle.on_timer(
                    config, timer, incident, state, self._clock.now(), overrides
                )
                if incident is not None:
                    await self._apply(incident, effects)
                if effects.dropped:
                    log.info(
                        "timer %s: %s",
                        timer.kind,
                        effects.dropped,
                        extra={"incident_id": timer.incident_id},
                    )
        finally:
            self._release(timer.incident_id)

    def _release(self, incident_id: str) -> None:
        lock = self._locks.get(incident_id)
        if lock is not None and not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
            del self._locks[incident_id]

    async def _apply(self, incident: incident_pb2.Incident, effects: Effects) -> None:
        incident_id = incident.incident_id
        if effects.cancel_escalation:
            await self._timers.cancel_group(incident_id)
        if effects.cancel_auto_resolve:
            await self._timers.cancel_group(f"{incident_id}:auto")
        now = self._clock.now()
        futures: list[asyncio.Future[Any]] = []
        for page in effects.pages:
            futures.append(
                await self._producer.enqueue(
                    NOTIFICATIONS_REQUESTS, page.user_id, _request(incident, page, now)
                )
            )
        for command in effects.commands:
            futures.append(
                await self._producer.enqueue(
                    INCIDENTS_COMMANDS, incident.service_id, _command(incident, command, now)
                )
            )
        for future in futures:
            await future
        await self._timers.schedule(
            [Timer(t.timer_id, to_ms(t.due.timestamp()), t.to_payload()) for t in effects.timers]
        )
        if effects.state is not None:
            await self._states.put(incident_id, effects.state)
        if effects.pages or effects.commands:
            log.info(
                "escalation: %d page(s), %d command(s), %d timer(s)",
                len(effects.pages),
                len(effects.commands),
                len(effects.timers),
                extra={"incident_id": incident_id},
            )


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
    else:
        command.timeline_entry.type = spec.event_type  # type: ignore[assignment]
        command.timeline_entry.message = spec.message
    set_timestamp(command.requested_at, now)
    return command
