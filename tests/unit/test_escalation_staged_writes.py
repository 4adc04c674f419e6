"""The writes a batch of incident events stages until its records are durable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tocsin.v1 import incident_pb2
from tocsin_escalation.escalator import StagedWrites
from tocsin_escalation.lifecycle import (
    ACK_TIMEOUT,
    LEVEL,
    Effects,
    EscalationState,
    TimerSpec,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def event(event_id: str, incident_id: str = "inc-1") -> incident_pb2.IncidentEvent:
    return incident_pb2.IncidentEvent(
        event_id=event_id, incident=incident_pb2.Incident(incident_id=incident_id)
    )


def test_cancels_and_schedules_keep_the_order_they_were_decided_in() -> None:
    staged = StagedWrites()
    triggered = Effects(
        state=EscalationState(run="e1", phase="escalating"),
        cancel_escalation=True,
        timers=[TimerSpec(LEVEL, "inc-1", T0 + timedelta(minutes=5), "e1", 2)],
    )
    acknowledged = Effects(
        state=EscalationState(run="e2", phase="acknowledged"),
        cancel_escalation=True,
        timers=[TimerSpec(ACK_TIMEOUT, "inc-1", T0 + timedelta(minutes=30), "e2")],
    )
    resolved = Effects(
        state=EscalationState(phase="stopped"), cancel_escalation=True, cancel_auto_resolve=True
    )
    for name, effects in (("e1", triggered), ("e2", acknowledged), ("e3", resolved)):
        staged.add_effects("inc-1", effects)
        staged.add_event(event(name))

    ops = [op if isinstance(op, str) else [t.timer_id for t in op] for op in staged.timer_ops]
    assert ops == [
        "inc-1",
        [triggered.timers[0].timer_id],
        "inc-1",  # the acknowledgement cancels the level timer scheduled before it
        [acknowledged.timers[0].timer_id],
        "inc-1",
        "inc-1:auto",
    ]
    assert staged.states == {"inc-1": resolved.state}  # the last decision is written
    assert [e.event_id for e in staged.events] == ["e1", "e2", "e3"]


def test_an_event_without_effects_is_still_applied_and_its_incident_is_the_latest() -> None:
    staged = StagedWrites()
    staged.add_effects("inc-1", Effects(dropped="no escalation effect"))
    first, second = event("a"), event("b")
    second.incident.title = "newer"
    staged.add_event(first)
    staged.add_event(second)
    assert staged.timer_ops == [] and staged.states == {}
    assert staged.event_ids == {"a", "b"}
    assert staged.incidents["inc-1"].title == "newer"


def test_a_level_entry_is_applied_right_after_the_event_that_reached_it() -> None:
    staged = StagedWrites()
    first, second = event("e1"), event("e2")
    entry = incident_pb2.IncidentEvent(event_id="level-1")
    staged.add_event(first)
    staged.add_entries(first.incident, [entry])
    staged.add_event(second)
    assert staged.projection == [first, (entry, "inc-1", first.incident.service_id), second]
    assert staged.event_ids == {"e1", "e2"}  # an entry is not an event of the batch


def test_commands_are_state_changes_or_entries_correlation_applies() -> None:
    from tocsin_escalation.escalator import _command
    from tocsin_escalation.lifecycle import CommandSpec

    inc = incident_pb2.Incident(incident_id="inc-1", service_id="svc")
    assert _command(inc, CommandSpec("resolve", "c1"), T0).WhichOneof("command") == "resolve"
    entry = _command(
        inc,
        CommandSpec(
            "timeline_entry",
            "c2",
            message="m",
            event_type=incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED,
        ),
        T0,
    )
    assert entry.timeline_entry.type == incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED
    with pytest.raises(ValueError, match="command kind: 'escalated' is not"):
        _command(inc, CommandSpec("escalated", "c3"), T0)
