"""tocsin_common.timeline's pure part: the entry of a page's outcome, and what an append
sends (the script itself runs against Redis in tests/integration/test_incident_read_side.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_common import timeline

N = notification_pb2


def status(outcome: int, attempt: int = 1, detail: str = "") -> N.NotificationStatus:
    s = N.NotificationStatus(
        request_id="req-1",
        incident_id="inc-1",
        user_id="nina",
        channel="webhook",
        outcome=outcome,  # type: ignore[arg-type]
        attempt=attempt,
        detail=detail,
    )
    s.at.FromDatetime(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    return s


def test_a_delivered_page_is_a_notified_entry_with_the_persons_name() -> None:
    entry = timeline.notified_entry(status(N.DELIVERY_OUTCOME_DELIVERED), "Nina")
    assert entry is not None
    assert entry.type == incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED
    assert entry.actor == "notification"
    assert entry.message == "Notified Nina by webhook"
    assert entry.at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert not entry.HasField("incident")


def test_failures_say_the_attempt_and_why_and_fall_back_to_the_user_id() -> None:
    entry = timeline.notified_entry(status(N.DELIVERY_OUTCOME_RETRYING, 2, "HTTP 503"))
    assert entry is not None
    assert entry.message == "Notification attempt failed for nina by webhook (attempt 2): HTTP 503"
    failed = timeline.notified_entry(status(N.DELIVERY_OUTCOME_FAILED, 3, "gave up"), "Nina")
    assert failed is not None and failed.message.startswith("Could not notify Nina")


def test_a_duplicate_is_not_on_the_timeline() -> None:
    assert timeline.notified_entry(status(N.DELIVERY_OUTCOME_DUPLICATE)) is None


def test_an_outcome_replayed_has_the_same_id_another_attempt_or_outcome_another() -> None:
    one = timeline.notified_entry(status(N.DELIVERY_OUTCOME_RETRYING, 1))
    again = timeline.notified_entry(status(N.DELIVERY_OUTCOME_RETRYING, 1))
    second = timeline.notified_entry(status(N.DELIVERY_OUTCOME_RETRYING, 2))
    delivered = timeline.notified_entry(status(N.DELIVERY_OUTCOME_DELIVERED, 2))
    assert one is not None and again is not None and second is not None and delivered is not None
    assert one.event_id == again.event_id
    assert len({one.event_id, second.event_id, delivered.event_id}) == 3


class RecordingPipe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def eval(self, *args: Any) -> None:
        self.calls.append(args)


def test_an_append_sends_the_entry_without_its_incident_and_the_keys_of_its_incident() -> None:
    entry = incident_pb2.IncidentEvent(
        event_id="e1",
        type=incident_pb2.INCIDENT_EVENT_TYPE_ESCALATED,
        message="escalated to level 1: paged nina",
        incident=incident_pb2.Incident(incident_id="inc-1", title="stale snapshot"),
    )
    pipe = RecordingPipe()
    timeline.queue_append(pipe, entry, "inc-1", "checkout", 50)
    (call,) = pipe.calls
    script, nkeys, *rest = call
    assert script == timeline.APPEND and nkeys == 5
    keys, args = rest[:5], rest[5:]
    assert keys == [
        "tocsin:incident-event-seen:e1",
        "tocsin:incident:inc-1",
        "tocsin:incident:inc-1:timeline",
        "tocsin:incident:inc-1:parked",
        timeline.STREAM_KEY,
    ]
    sent = incident_pb2.IncidentEvent.FromString(args[1])
    assert not sent.HasField("incident") and sent.message == entry.message
    assert args[2:] == ["checkout", 50]
    assert entry.incident.title == "stale snapshot"  # the caller's entry is left alone


def test_an_append_without_an_id_or_an_incident_is_refused() -> None:
    with pytest.raises(ValueError, match=r"entry\.event_id: missing"):
        timeline.queue_append(RecordingPipe(), incident_pb2.IncidentEvent(), "inc-1", "s")
    with pytest.raises(ValueError, match="incident_id: missing"):
        timeline.queue_append(RecordingPipe(), incident_pb2.IncidentEvent(event_id="e"), "", "s")


def test_concatenating_an_incident_sets_it_as_the_script_does() -> None:
    # What APPEND's with_incident does in Lua: the entry, tag 0x1A, a varint length, the
    # incident. Checked here with a length over 127 (a two-byte varint).
    incident = incident_pb2.Incident(incident_id="inc-1", title="x" * 300)
    raw = incident.SerializeToString()
    n, length = len(raw), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte + 128 if n else byte])
        if not n:
            break
    entry = incident_pb2.IncidentEvent(event_id="e1", message="m")
    merged = incident_pb2.IncidentEvent.FromString(
        entry.SerializeToString() + b"\x1a" + length + raw
    )
    assert merged.incident == incident and merged.message == "m"
