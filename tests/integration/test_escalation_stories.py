"""Escalation as on-call people live it, against the real stack (stack_config/20-escalation.yaml).

Each story triggers an incident on a service of its own, then watches the recording webhook:
who was paged, when, and how often.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest
from tocsin.v1 import (
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    oncall_service_pb2,
    oncall_service_pb2_grpc,
)
from tocsin_common.timeutil import from_timestamp, to_timestamp

from tests.integration.harness import Stack
from tools.recorder import RecordedRequest

pytestmark = pytest.mark.integration

KEYS = {
    "ladder": "escalation00000000000000000000001",
    "repeat": "escalation00000000000000000000002",
    "acktimeout": "escalation00000000000000000000003",
    "snooze": "escalation00000000000000000000004",
    "reassign": "escalation00000000000000000000005",
    "crash": "escalation00000000000000000000006",
    "delayed": "escalation00000000000000000000007",
    "autoresolve": "escalation00000000000000000000008",
}


async def trigger(stack: Stack, story: str) -> str:
    """Trigger an incident on the story's service; its (unique) title."""
    title = f"{story} {os.urandom(4).hex()}"
    body = {
        "routing_key": KEYS[story],
        "event_action": "trigger",
        "dedup_key": title,
        "payload": {"summary": title, "source": "esc-tests", "severity": "critical"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response,
    ):
        assert response.status == 202, await response.text()
    return title


def pages_of(stack: Stack, title: str, user: str | None = None) -> list[RecordedRequest]:
    found = []
    for page in list(stack.pages.requests):
        try:
            body = page.json()
        except ValueError:
            continue
        if body.get("incident", {}).get("title") != title:
            continue
        if user is None or page.path == f"/pages/{user}":
            found.append(page)
    return found


async def wait_pages(
    stack: Stack, title: str, user: str, count: int = 1, timeout: float = 30.0
) -> list[RecordedRequest]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pages_of(stack, title, user)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{user} got {len(pages_of(stack, title, user))} page(s) for {title!r}, "
        f"expected {count}; all: {[p.path for p in pages_of(stack, title)]}\n{stack.logs()}"
    )


async def incidents(stack: Stack) -> incident_service_pb2_grpc.IncidentServiceStub:
    channel = stack.channel("escalation")
    return incident_service_pb2_grpc.IncidentServiceStub(channel)


async def wait_status(
    stub: incident_service_pb2_grpc.IncidentServiceStub,
    incident_id: str,
    status: int,
    timeout: float = 15.0,
) -> incident_pb2.Incident:
    deadline = time.monotonic() + timeout
    while True:
        incident = await stub.Get(incident_service_pb2.GetIncidentRequest(incident_id=incident_id))
        if incident.status == status or time.monotonic() > deadline:
            assert incident.status == status, incident
            return incident
        await asyncio.sleep(0.1)


def incident_id_of(page: RecordedRequest) -> str:
    value: str = page.json()["incident"]["id"]
    return value


# --- the ladder ---------------------------------------------------------------------------------


async def test_level_one_pages_alice_at_once_and_level_two_pages_bob_after_two_seconds(
    stack: Stack,
) -> None:
    title = await trigger(stack, "ladder")
    await wait_pages(stack, title, "esc-alice")
    alice_at = time.monotonic()
    [bob] = await wait_pages(stack, title, "esc-bob")
    waited = time.monotonic() - alice_at
    assert 1.0 <= waited <= 4.5, f"level 2 came {waited:.1f}s after level 1, expected ~2s"
    assert bob.json()["idempotency_key"].endswith(":2:0:esc-bob:0")
    await asyncio.sleep(2.5)  # the ladder ends at level 2 (no repeat): nobody is paged again
    assert len(pages_of(stack, title)) == 2


async def test_alice_acknowledging_stops_level_two(stack: Stack) -> None:
    title = await trigger(stack, "ladder")
    [alice] = await wait_pages(stack, title, "esc-alice")
    stub = await incidents(stack)
    incident_id = incident_id_of(alice)
    await stub.Acknowledge(incident_service_pb2.IncidentRef(incident_id=incident_id, actor="a"))
    await wait_status(stub, incident_id, incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED)
    await asyncio.sleep(3.5)
    assert pages_of(stack, title, "esc-bob") == []


async def test_resolving_stops_escalation(stack: Stack) -> None:
    title = await trigger(stack, "ladder")
    [alice] = await wait_pages(stack, title, "esc-alice")
    stub = await incidents(stack)
    incident_id = incident_id_of(alice)
    await stub.Resolve(incident_service_pb2.IncidentRef(incident_id=incident_id, actor="a"))
    await wait_status(stub, incident_id, incident_pb2.INCIDENT_STATUS_RESOLVED)
    await asyncio.sleep(3.5)
    assert pages_of(stack, title, "esc-bob") == []


async def test_a_policy_repeats_twice_then_stops(stack: Stack) -> None:
    title = await trigger(stack, "repeat")
    pages = await wait_pages(stack, title, "esc-rita", count=3, timeout=20)
    loops = sorted(p.json()["idempotency_key"].split(":")[2] for p in pages)
    assert loops == ["0", "1", "2"]
    await asyncio.sleep(2.5)
    assert len(pages_of(stack, title, "esc-rita")) == 3


async def test_a_delayed_notification_rule_pages_again_two_seconds_later(stack: Stack) -> None:
    title = await trigger(stack, "delayed")
    await wait_pages(stack, title, "esc-dana")
    first = time.monotonic()
    await wait_pages(stack, title, "esc-dana-late")
    assert 1.0 <= time.monotonic() - first <= 4.5


async def test_an_acknowledged_delayed_rule_does_not_fire(stack: Stack) -> None:
    title = await trigger(stack, "delayed")
    [page] = await wait_pages(stack, title, "esc-dana")
    stub = await incidents(stack)
    await stub.Acknowledge(
        incident_service_pb2.IncidentRef(incident_id=incident_id_of(page), actor="dana")
    )
    await wait_status(stub, incident_id_of(page), incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED)
    await asyncio.sleep(3)
    assert pages_of(stack, title, "esc-dana-late") == []


# --- acknowledgement timeout, snooze, reassign ------------------------------------------------


async def test_an_acknowledgement_times_out_and_pages_again(stack: Stack) -> None:
    # Needs correlation to apply UnacknowledgeCommand (emit UNACKNOWLEDGED, status triggered).
    title = await trigger(stack, "acktimeout")
    [page] = await wait_pages(stack, title, "esc-tim")
    stub = await incidents(stack)
    incident_id = incident_id_of(page)
    await stub.Acknowledge(incident_service_pb2.IncidentRef(incident_id=incident_id, actor="tim"))
    await wait_status(stub, incident_id, incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED)
    pages = await wait_pages(stack, title, "esc-tim", count=2, timeout=15)
    assert pages[0].json()["idempotency_key"] != pages[1].json()["idempotency_key"]
    await wait_status(stub, incident_id, incident_pb2.INCIDENT_STATUS_TRIGGERED)


async def test_snoozing_pauses_paging_until_the_snooze_ends(stack: Stack) -> None:
    title = await trigger(stack, "snooze")
    [page] = await wait_pages(stack, title, "esc-sam")
    stub = await incidents(stack)
    until = datetime.now(UTC) + timedelta(seconds=3)
    await stub.Snooze(
        incident_service_pb2.SnoozeRequest(
            incident_id=incident_id_of(page), actor="sam", until=to_timestamp(until)
        )
    )
    await asyncio.sleep(1.5)
    assert len(pages_of(stack, title, "esc-sam")) == 1
    pages = await wait_pages(stack, title, "esc-sam", count=2, timeout=10)
    arrived = datetime.now(UTC)
    assert arrived >= until - timedelta(milliseconds=200)
    assert pages[1].json()["idempotency_key"] != pages[0].json()["idempotency_key"]


async def test_a_snooze_beyond_the_horizon_and_an_oversized_note_are_refused(
    stack: Stack,
) -> None:
    stub = await incidents(stack)
    too_far = datetime.now(UTC) + timedelta(days=7, minutes=1)  # limits.snooze_max: 7d
    with pytest.raises(grpc.aio.AioRpcError) as snooze:
        await stub.Snooze(
            incident_service_pb2.SnoozeRequest(
                incident_id="any", actor="sam", until=to_timestamp(too_far)
            )
        )
    assert snooze.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "until: " in (snooze.value.details() or "")
    assert "limits.snooze_max" in (snooze.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as note:
        await stub.AddNote(
            incident_service_pb2.AddNoteRequest(incident_id="any", actor="sam", text="n" * 10_001)
        )
    assert note.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.note_max_chars" in (note.value.details() or "")


async def test_reassigning_to_a_user_pages_that_user(stack: Stack) -> None:
    title = await trigger(stack, "reassign")
    [page] = await wait_pages(stack, title, "esc-rae")
    stub = await incidents(stack)
    await stub.Reassign(
        incident_service_pb2.ReassignRequest(
            incident_id=incident_id_of(page), actor="rae", user_id="esc-ursula"
        )
    )
    await wait_pages(stack, title, "esc-ursula")


async def test_reassigning_to_a_policy_restarts_escalation_there(stack: Stack) -> None:
    title = await trigger(stack, "reassign")
    [page] = await wait_pages(stack, title, "esc-rae")
    stub = await incidents(stack)
    await stub.Reassign(
        incident_service_pb2.ReassignRequest(
            incident_id=incident_id_of(page), actor="rae", escalation_policy_id="esc-other"
        )
    )
    await wait_pages(stack, title, "esc-otto")
    assert len(pages_of(stack, title, "esc-rae")) == 1


async def test_an_incident_open_too_long_is_resolved_automatically(stack: Stack) -> None:
    title = await trigger(stack, "autoresolve")
    deadline = time.monotonic() + 20
    while not pages_of(stack, title):
        assert time.monotonic() < deadline, stack.logs()
        await asyncio.sleep(0.1)
    stub = await incidents(stack)
    incident = await wait_status(
        stub, incident_id_of(pages_of(stack, title)[0]), incident_pb2.INCIDENT_STATUS_RESOLVED
    )
    timeline = await stub.Timeline(
        incident_service_pb2.TimelineRequest(incident_id=incident.incident_id)
    )
    assert timeline.events[-1].actor == "system"


async def test_every_level_reached_is_on_the_timeline(stack: Stack) -> None:
    # Escalation records the levels itself and notification the pages' outcomes: neither
    # goes through correlation (no timeline_entry command), and each entry carries the
    # incident as the projection held it.
    title = await trigger(stack, "ladder")
    [alice] = await wait_pages(stack, title, "esc-alice")
    await wait_pages(stack, title, "esc-bob")
    stub = await incidents(stack)
    deadline = time.monotonic() + 10
    while True:
        timeline = await stub.Timeline(
            incident_service_pb2.TimelineRequest(incident_id=incident_id_of(alice))
        )
        escalated = [
            e.message
            for e in timeline.events
            if e.type == incident_pb2.INCIDENT_EVENT_TYPE_ESCALATED
        ]
        notified = [
            e for e in timeline.events if e.type == incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED
        ]
        if (len(escalated) >= 2 and len(notified) >= 2) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert escalated == [
        "escalated to level 1: paged esc-alice",
        "escalated to level 2: paged esc-bob",
    ]
    kinds = [e.type for e in timeline.events]
    assert kinds[0] == incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED
    # Level 1 was decided on the trigger, in the same batch: it follows it at once.
    assert kinds[1] == incident_pb2.INCIDENT_EVENT_TYPE_ESCALATED
    assert [n.message.split(" by ")[0] for n in notified] == [
        "Notified esc-alice",
        "Notified esc-bob",
    ]
    for entry in timeline.events:
        assert entry.incident.incident_id == incident_id_of(alice)
        assert entry.incident.status == incident_pb2.INCIDENT_STATUS_TRIGGERED
        assert entry.HasField("at")


# --- a crash mid-wait -------------------------------------------------------------------------


async def test_level_two_fires_exactly_once_after_escalation_is_killed_mid_wait(
    stack: Stack,
) -> None:
    title = await trigger(stack, "crash")
    await wait_pages(stack, title, "esc-cathy")
    await stack.restart("escalation")  # SIGKILL while level 2 (due in 8 s) is pending
    await wait_pages(stack, title, "esc-dave", timeout=40)
    await asyncio.sleep(3)
    assert len(pages_of(stack, title, "esc-dave")) == 1
    assert len(pages_of(stack, title, "esc-cathy")) == 1


# --- on-call over gRPC ------------------------------------------------------------------------


def oncall(stack: Stack) -> oncall_service_pb2_grpc.OnCallServiceStub:
    channel = stack.channel("escalation")
    return oncall_service_pb2_grpc.OnCallServiceStub(channel)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_who_is_on_call_renders_and_follows_a_runtime_override(stack: Stack) -> None:
    stub = oncall(stack)
    noon = at("2026-06-10T12:00:00+02:00")  # day 156 of the daily [alice, bob] layer: alice
    reply = await stub.WhoIsOnCall(
        oncall_service_pb2.WhoIsOnCallRequest(schedule_id="esc-rota", at=to_timestamp(noon))
    )
    assert [e.user_id for e in reply.entries] == ["esc-alice"]
    assert from_timestamp(reply.entries[0].start) == at("2026-06-10T09:00:00+02:00")
    assert from_timestamp(reply.entries[0].end) == at("2026-06-10T18:00:00+02:00")

    override = oncall_service_pb2.Override(
        schedule_id="esc-rota",
        user_id="esc-ursula",
        start=to_timestamp(at("2026-06-10T11:00:00+02:00")),
        end=to_timestamp(at("2026-06-10T13:00:00+02:00")),
    )
    created = await stub.CreateOverride(oncall_service_pb2.CreateOverrideRequest(override=override))
    assert created.override_id
    reply = await stub.WhoIsOnCall(
        oncall_service_pb2.WhoIsOnCallRequest(schedule_id="esc-rota", at=to_timestamp(noon))
    )
    assert [e.user_id for e in reply.entries] == ["esc-ursula"]

    # The same user cannot be overriding twice at once.
    with pytest.raises(grpc.aio.AioRpcError) as overlap:
        await stub.CreateOverride(oncall_service_pb2.CreateOverrideRequest(override=override))
    assert overlap.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert overlap.value.details().startswith("override.start:")

    rendered = await stub.RenderSchedule(
        oncall_service_pb2.RenderScheduleRequest(
            schedule_id="esc-rota",
            since=to_timestamp(at("2026-06-10T09:00:00+02:00")),
            until=to_timestamp(at("2026-06-11T09:00:00+02:00")),
        )
    )
    spans = [
        (
            from_timestamp(s.start).astimezone(at("2026-06-10T00:00:00+02:00").tzinfo).hour,
            list(s.user_ids),
        )
        for s in rendered.spans
    ]
    assert spans == [
        (9, ["esc-alice"]),
        (11, ["esc-ursula"]),
        (13, ["esc-alice"]),
        (18, ["esc-arnold"]),
        (20, ["esc-alice"]),
    ]
    assert rendered.ical.startswith("BEGIN:VCALENDAR\r\n")
    assert rendered.ical.count("BEGIN:VEVENT") == 5

    await stub.DeleteOverride(
        oncall_service_pb2.DeleteOverrideRequest(
            schedule_id="esc-rota", override_id=created.override_id
        )
    )
    reply = await stub.WhoIsOnCall(
        oncall_service_pb2.WhoIsOnCallRequest(schedule_id="esc-rota", at=to_timestamp(noon))
    )
    assert [e.user_id for e in reply.entries] == ["esc-alice"]


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (
            oncall_service_pb2.CreateOverrideRequest(
                override=oncall_service_pb2.Override(
                    schedule_id="nope",
                    user_id="esc-alice",
                    start=to_timestamp(at("2026-01-01T00:00:00Z")),
                    end=to_timestamp(at("2026-01-02T00:00:00Z")),
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "override.schedule_id",
        ),
        (
            oncall_service_pb2.CreateOverrideRequest(
                override=oncall_service_pb2.Override(
                    schedule_id="esc-rota",
                    user_id="nobody",
                    start=to_timestamp(at("2026-01-01T00:00:00Z")),
                    end=to_timestamp(at("2026-01-02T00:00:00Z")),
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "override.user_id",
        ),
        (
            oncall_service_pb2.CreateOverrideRequest(
                override=oncall_service_pb2.Override(
                    schedule_id="esc-rota",
                    user_id="esc-bob",
                    start=to_timestamp(at("2026-01-02T00:00:00Z")),
                    end=to_timestamp(at("2026-01-01T00:00:00Z")),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "override.end",
        ),
        (
            oncall_service_pb2.DeleteOverrideRequest(schedule_id="esc-rota", override_id="x"),
            grpc.StatusCode.NOT_FOUND,
            "override_id",
        ),
        (
            oncall_service_pb2.RenderScheduleRequest(schedule_id="esc-rota"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "since",
        ),
        (
            oncall_service_pb2.WhoIsOnCallRequest(schedule_id="nope"),
            grpc.StatusCode.NOT_FOUND,
            "schedule_id",
        ),
    ],
)
async def test_bad_on_call_requests_name_the_field(
    stack: Stack, request_: object, code: grpc.StatusCode, field: str
) -> None:
    stub = oncall(stack)
    method = {
        oncall_service_pb2.CreateOverrideRequest: stub.CreateOverride,
        oncall_service_pb2.DeleteOverrideRequest: stub.DeleteOverride,
        oncall_service_pb2.RenderScheduleRequest: stub.RenderSchedule,
        oncall_service_pb2.WhoIsOnCallRequest: stub.WhoIsOnCall,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await method(request_)
    assert error.value.code() == code
    assert error.value.details().startswith(f"{field}:")


async def test_bad_incident_requests_name_the_field(stack: Stack) -> None:
    stub = await incidents(stack)
    cases = [
        (
            stub.Acknowledge(incident_service_pb2.IncidentRef(incident_id="nope", actor="a")),
            grpc.StatusCode.NOT_FOUND,
            "incident_id",
        ),
        (
            stub.Get(incident_service_pb2.GetIncidentRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "incident_id",
        ),
        (
            stub.List(incident_service_pb2.ListIncidentsRequest(limit=5000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit",
        ),
        (
            stub.Reassign(incident_service_pb2.ReassignRequest(incident_id="x", actor="a")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "escalation_policy_id, user_id",
        ),
        (
            stub.Reassign(
                incident_service_pb2.ReassignRequest(incident_id="x", actor="a", user_id="nobody")
            ),
            grpc.StatusCode.NOT_FOUND,
            "user_id",
        ),
    ]
    for call, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == code, field
        assert error.value.details().startswith(f"{field}:"), error.value.details()
