"""Incident commands as every surface writes them (escalation's IncidentService, the signed
links in pages): one command id, the service as key, the authenticated actor, a timestamp."""

from __future__ import annotations

import uuid
from datetime import datetime

from tocsin.v1 import incident_pb2

from tocsin_common.kafka import EventProducer
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import INCIDENTS_COMMANDS


def incident_command(
    incident_id: str, service_id: str, actor: str, at: datetime, **kind: object
) -> incident_pb2.IncidentCommand:
    command = incident_pb2.IncidentCommand(
        command_id=str(uuid.uuid4()),
        incident_id=incident_id,
        service_id=service_id,
        actor=actor,
        **kind,  # type: ignore[arg-type]
    )
    set_timestamp(command.requested_at, at)
    return command


async def send_command(producer: EventProducer, command: incident_pb2.IncidentCommand) -> None:
    """Durable on incidents.commands, keyed by service: applied in order with the alerts of
    the same service."""
    await producer.send(INCIDENTS_COMMANDS, command.service_id, command)
