"""Reacts to incident events: pages level 1 of the service's policy when an incident
triggers, and keeps the read-side projection. Thin: decisions are in policy.py."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common.config import ConfigStore
from tocsin_common.kafka import BadRecord, EventProducer
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import NOTIFICATIONS_REQUESTS

from tocsin_escalation.policy import plan_level
from tocsin_escalation.projection import IncidentProjection

log = logging.getLogger("tocsin.escalation")

_URGENCY = {incident_pb2.URGENCY_HIGH: "high", incident_pb2.URGENCY_LOW: "low"}


class Escalator:
    def __init__(
        self, config: ConfigStore, producer: EventProducer, projection: IncidentProjection
    ) -> None:
        self._config = config
        self._producer = producer
        self._projection = projection

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        event = incident_pb2.IncidentEvent()
        try:
            event.ParseFromString(record.value or b"")
        except Exception as e:
            raise BadRecord(f"undecodable IncidentEvent: {e}") from None
        if not event.incident.incident_id:
            raise BadRecord("incident.incident_id: missing")
        first_time = await self._projection.apply(event)
        if not first_time:
            return
        if event.type == incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED:
            await self._page_level(event.incident, level=1, loop=0)
        elif event.type == incident_pb2.INCIDENT_EVENT_TYPE_REASSIGNED:
            # Escalation starts over on the new assignee: a new "loop" keeps the
            # idempotency keys of these pages apart from the first ones.
            await self._page_level(event.incident, level=1, loop=_reassign_loop(event))

    async def _page_level(self, incident: incident_pb2.Incident, level: int, loop: int) -> None:
        config = self._config.current
        now = datetime.now(UTC)
        try:
            pages = plan_level(
                config,
                incident.escalation_policy_id,
                level,
                loop,
                _URGENCY.get(incident.urgency, "high"),
                now,
            )
        except KeyError as e:
            log.error("cannot escalate: %s", e, extra={"incident_id": incident.incident_id})
            return
        futures = []
        for page in pages:
            if page.delay.total_seconds() > 0:
                continue  # delayed rules are fired by the escalation timers
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
            futures.append(
                await self._producer.enqueue(NOTIFICATIONS_REQUESTS, page.user_id, request)
            )
        for future in futures:
            await future
        log.info(
            "level %d paged %d rule(s)",
            level,
            len(futures),
            extra={"incident_id": incident.incident_id},
        )


def _reassign_loop(event: incident_pb2.IncidentEvent) -> int:
    """A loop number unique to this reassignment (derived from its event, stable on replay)."""
    return 1000 + int(event.event_id.replace("-", "")[:6], 16)
