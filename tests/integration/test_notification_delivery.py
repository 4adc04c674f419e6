"""Notification stories against real Kafka, Redis and the four services:

- a replayed request pages once;
- a peer that keeps failing gets five attempts, then a dead letter with the history;
  a 400 gets one attempt; every outcome is a status (and, but a duplicate, a timeline entry);
- a burst for one person becomes one message listing the incidents;
- a signed link acts only on POST (HEAD, GET and `GET ?confirm=1` change nothing), once: a
  link whose incident is already in or past its state answers 409 with the state; a
  tampered link is refused; rotating the link keys keeps outstanding links working until
  the old key is retired;
- escalation answers a batch of contact look-ups (GetContactMethods) with one result each,
  as the single look-up would have answered it, and pages to different people in one
  burst are delivered with their contacts looked up in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis
from tocsin.v1 import (
    alert_pb2,
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    notification_pb2,
    oncall_service_pb2,
    oncall_service_pb2_grpc,
)
from tocsin_common.secrets import generate_secret
from tocsin_notification.contacts import GrpcContacts
from tocsin_notification.links import derived_kid
from tocsin_notification.providers.base import DeliveryError

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

FAILING_PEER_PORT = 31931  # fixed: written into stack_config/30-notification.yaml; below
# Linux's ephemeral range (32768+), where an outgoing connection may hold it (met in CI)
# The healthy endpoint of the same peer (dora-burst), on a port of its own: circuit
# breakers are per endpoint (host and port), and the failing tests open the first one's.
HEALTHY_PEER_PORT = 31932


class FailingPeer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json()))
        status = {"/always-500": 500, "/always-400": 400}.get(request.path, 200)
        return web.json_response({}, status=status)


@pytest.fixture(scope="module")
async def failing_peer() -> AsyncIterator[FailingPeer]:
    peer = FailingPeer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", FAILING_PEER_PORT).start()
    await web.TCPSite(runner, "127.0.0.1", HEALTHY_PEER_PORT).start()
    yield peer
    await runner.cleanup()


def request(
    user: str, contact: str, title: str = "disk full"
) -> notification_pb2.NotificationRequest:
    incident_id = str(uuid.uuid4())
    return notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=f"{incident_id}:1:0:{user}:0",
        user_id=user,
        contact_method_id=contact,
        escalation_level=1,
        urgency=incident_pb2.URGENCY_HIGH,
        incident=incident_pb2.Incident(
            incident_id=incident_id,
            service_id="notif-svc",
            title=title,
            status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
            urgency=incident_pb2.URGENCY_HIGH,
            labels={"runbook_url": "https://runbooks.example/disk"},
        ),
    )


async def produce(stack: Stack, *values: tuple[str, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait("notifications.requests", value, key=key.encode())
    finally:
        await producer.stop()


async def read_topic(stack: Stack, topic: str, until: Any, timeout: float = 30) -> list[bytes]:
    """Every value on `topic` (from the start) once `until(values)` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                values.extend(r.value for r in records if r.value is not None)
            if until(values):
                return values
        raise TimeoutError(f"{topic}: condition not met in {timeout}s ({len(values)} records)")
    finally:
        await consumer.stop()


def statuses(values: list[bytes], incident_id: str) -> list[notification_pb2.NotificationStatus]:
    out = []
    for value in values:
        status = notification_pb2.NotificationStatus.FromString(value)
        if status.incident_id == incident_id:
            out.append(status)
    return out


async def test_a_replayed_request_pages_once_and_lands_on_the_timeline(stack: Stack) -> None:
    req = request("nina", "nina-hook")
    raw = req.SerializeToString()
    before = len(stack.pages.requests)
    await produce(stack, ("nina", raw))
    await stack.pages.wait_for(before + 1, timeout=30)
    # Replays: the very same bytes again, twice (a redelivery, a replay of the topic).
    await produce(stack, ("nina", raw), ("nina", raw))
    Outcome = notification_pb2.DeliveryOutcome
    values = await read_topic(
        stack,
        "notifications.status",
        lambda vs: (
            sum(
                s.outcome == Outcome.DELIVERY_OUTCOME_DUPLICATE
                for s in statuses(vs, req.incident.incident_id)
            )
            >= 2
        ),
    )
    pages = [
        p
        for p in stack.pages.requests[before:]
        if p.json()["incident"]["id"] == req.incident.incident_id
    ]
    assert len(pages) == 1
    body = pages[0].json()
    assert body["links"]["runbook"] == "https://runbooks.example/disk"
    assert "/v1/links/" in body["links"]["acknowledge"]
    outcomes = [s.outcome for s in statuses(values, req.incident.incident_id)]
    assert outcomes.count(Outcome.DELIVERY_OUTCOME_DELIVERED) == 1
    # Its outcome is on the incident's timeline once, appended by notification itself (no
    # command through correlation). This incident never reached the projection (the
    # request was produced by hand), so the entry waits, parked, for its first event.
    redis = Redis.from_url(stack.redis_url)
    try:
        parked = await redis.lrange(f"tocsin:incident:{req.incident.incident_id}:parked", 0, -1)
    finally:
        await redis.aclose()
    entries = [incident_pb2.IncidentEvent.FromString(raw) for raw in parked]
    assert [e.type for e in entries] == [incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED]
    assert "Notified Nina by webhook" in entries[0].message


async def test_a_failing_peer_gets_retries_then_a_dead_letter_with_the_history(
    stack: Stack, failing_peer: FailingPeer
) -> None:
    down = request("dora", "dora-down")
    bad = request("dora", "dora-bad")
    await produce(stack, ("dora", down.SerializeToString()), ("dora", bad.SerializeToString()))
    letters = await read_topic(
        stack,
        "notifications.deadletter",
        lambda vs: (
            sum(
                alert_pb2.DeadLetter.FromString(v).original_value
                in (down.SerializeToString(), bad.SerializeToString())
                for v in vs
            )
            >= 2
        ),
        timeout=60,
    )
    by_value = {alert_pb2.DeadLetter.FromString(v).original_value: v for v in letters}
    down_letter = alert_pb2.DeadLetter.FromString(by_value[down.SerializeToString()])
    reason = json.loads(down_letter.reason)
    assert [a["attempt"] for a in reason["attempts"]] == [1, 2, 3, 4, 5]
    assert all(a["error"].startswith("HTTP 500") and a["retryable"] for a in reason["attempts"])
    assert down_letter.source_topic == "notifications.requests"
    assert down_letter.failed_service == "notification"
    bad_reason = json.loads(
        alert_pb2.DeadLetter.FromString(by_value[bad.SerializeToString()]).reason
    )
    assert len(bad_reason["attempts"]) == 1 and bad_reason["reason"].startswith("not retryable")
    assert sum(path == "/always-400" for path, _ in failing_peer.requests) == 1
    Outcome = notification_pb2.DeliveryOutcome
    # Until the final status is read: a fresh consumer's first poll may return nothing yet.
    values = await read_topic(
        stack,
        "notifications.status",
        lambda vs: any(
            s.outcome == Outcome.DELIVERY_OUTCOME_FAILED
            for s in statuses(vs, down.incident.incident_id)
        ),
        timeout=30,
    )
    outcomes = [s.outcome for s in statuses(values, down.incident.incident_id)]
    assert outcomes.count(Outcome.DELIVERY_OUTCOME_RETRYING) == 4
    assert outcomes[-1] == Outcome.DELIVERY_OUTCOME_FAILED


async def test_a_burst_for_one_person_becomes_one_message(
    stack: Stack, failing_peer: FailingPeer
) -> None:
    burst = [request("dora", "dora-burst", title=f"burst {n}") for n in range(5)]
    before = sum(path == "/burst" for path, _ in failing_peer.requests)
    await produce(stack, *(("dora", r.SerializeToString()) for r in burst))
    ids = {r.incident.incident_id for r in burst}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    seen: set[str] = set()
    while loop.time() < deadline and seen != ids:
        await asyncio.sleep(0.2)
        seen = {
            i["id"]
            for path, body in failing_peer.requests
            if path == "/burst"
            for i in body.get("incidents", [])
        } & ids
    messages = [b for p, b in failing_peer.requests if p == "/burst"][before:]
    assert seen == ids  # nobody's page dropped
    assert len(messages) <= 2  # the first at once, the rest bundled into one
    assert max(len(m["incidents"]) for m in messages) >= 4


async def _page_for_alert(stack: Stack) -> dict[str, Any]:
    before = len(stack.pages.requests)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.ingest_url}/v2/enqueue",
            json={
                "routing_key": "notification0000000000000000001x",
                "event_action": "trigger",
                "dedup_key": f"link-{uuid.uuid4()}",
                "payload": {"summary": "queue backlog", "source": "q-1", "severity": "critical"},
            },
        ) as r:
            assert r.status == 202
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        for page in stack.pages.requests[before:]:
            if page.path == "/pages/nina" and page.json()["incident"]["title"] == "queue backlog":
                body: dict[str, Any] = page.json()
                return body
        await asyncio.sleep(0.2)
    raise TimeoutError("no page for the alert")


@contextlib.asynccontextmanager
async def _incident_stub(
    stack: Stack,
) -> AsyncIterator[incident_service_pb2_grpc.IncidentServiceStub]:
    async with stack.channel("escalation") as channel:
        yield incident_service_pb2_grpc.IncidentServiceStub(channel)


async def _wait_status(
    stub: incident_service_pb2_grpc.IncidentServiceStub, incident_id: str, status: int
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    seen = None
    while loop.time() < deadline:
        seen = (
            await stub.Get(incident_service_pb2.GetIncidentRequest(incident_id=incident_id))
        ).status
        if seen == status:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"incident {incident_id}: status {seen}, expected {status}")


async def _timeline_after_barrier(
    stub: incident_service_pb2_grpc.IncidentServiceStub, incident_id: str
) -> list[incident_pb2.IncidentEvent]:
    """The timeline once every command sent before now has been applied: a note goes
    through incidents.commands behind them (same service, same partition, in order)."""
    text = f"barrier {uuid.uuid4()}"
    await stub.AddNote(
        incident_service_pb2.AddNoteRequest(incident_id=incident_id, actor="test", text=text)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        events = list(
            (
                await stub.Timeline(incident_service_pb2.TimelineRequest(incident_id=incident_id))
            ).events
        )
        if any(
            e.type == incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED and e.message == text
            for e in events
        ):
            return events
        await asyncio.sleep(0.2)
    raise TimeoutError(f"incident {incident_id}: the barrier note never reached the timeline")


def _count(events: list[incident_pb2.IncidentEvent], kind: int) -> int:
    return sum(1 for e in events if e.type == kind)


def _links_base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.services['notification'].http_port}/v1/links"


async def test_only_a_post_acts_and_a_moot_link_answers_409_with_the_state(stack: Stack) -> None:
    body = await _page_for_alert(stack)
    incident_id = body["incident"]["id"]
    ack = body["links"]["acknowledge"].rsplit("/", 1)[1]
    resolve = body["links"]["resolve"].rsplit("/", 1)[1]
    base = _links_base(stack)
    E = incident_pb2
    async with aiohttp.ClientSession() as session:
        tampered = ack[:-3] + ("AAA" if not ack.endswith("AAA") else "BBB")
        async with session.post(f"{base}/{tampered}") as r:
            assert r.status == 403
            assert "not valid" in await r.text()
        # Scanners, previews and the bug report's `GET ?confirm=1`: none of them acts.
        for token in (ack, resolve):
            async with session.head(f"{base}/{token}") as r:
                assert r.status == 200
            for query in ("", "?confirm=1"):
                async with session.get(f"{base}/{token}{query}") as r:
                    assert r.status == 200
                    assert '<form method="post">' in await r.text()
        async with _incident_stub(stack) as stub:
            events = await _timeline_after_barrier(stub, incident_id)
            assert _count(events, E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED) == 0
            assert _count(events, E.INCIDENT_EVENT_TYPE_RESOLVED) == 0
            assert events[-1].incident.status == E.INCIDENT_STATUS_TRIGGERED

            async with session.post(f"{base}/{ack}") as r:
                text = await r.text()
                assert r.status == 200, text
                assert "acknowledged" in text
            await _wait_status(stub, incident_id, E.INCIDENT_STATUS_ACKNOWLEDGED)
            async with session.post(f"{base}/{ack}") as r:
                text = await r.text()
                assert r.status == 409, text
                assert r.headers["X-Tocsin-Incident-State"] == "acknowledged"
                assert "already acknowledged" in text

            async with session.post(f"{base}/{resolve}") as r:
                assert r.status == 200, await r.text()
            await _wait_status(stub, incident_id, E.INCIDENT_STATUS_RESOLVED)
            # The bug report: a resolve link answered "resolved" again after the fact.
            for token in (resolve, ack):
                async with session.post(f"{base}/{token}") as r:
                    text = await r.text()
                    assert r.status == 409, text
                    assert r.headers["X-Tocsin-Incident-State"] == "resolved"
                    assert "already resolved" in text
            events = await _timeline_after_barrier(stub, incident_id)
            assert _count(events, E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED) == 1
            assert _count(events, E.INCIDENT_EVENT_TYPE_RESOLVED) == 1
            # The link is the paged person's credential: they are the actor, and audited.
            paged = body["user"]["id"]
            acted = {
                e.actor
                for e in events
                if e.type in (E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, E.INCIDENT_EVENT_TYPE_RESOLVED)
            }
            assert acted == {paged}, acted


async def test_rotating_the_link_keys_keeps_outstanding_links_until_the_old_key_retires(
    stack: Stack,
) -> None:
    old_kid = derived_kid(stack.link_secret.encode())
    first = await _page_for_alert(stack)
    outstanding = first["links"]["acknowledge"].rsplit("/", 1)[1]
    assert outstanding.startswith(f"{old_kid}.")
    # Rotate: a new current key first, the stack's original secret kept under its kid.
    notification = stack.services["notification"]
    notification.env.pop("TOCSIN_LINK_SECRET_FILE")
    new_secret = generate_secret()
    notification.env["TOCSIN_LINK_KEYS_FILE"] = str(
        stack.write_secret("link-keys", f"k-rotated:{new_secret},{old_kid}:{stack.link_secret}")
    )
    await stack.restart("notification", signal.SIGTERM)
    base = _links_base(stack)
    second = await _page_for_alert(stack)
    later = second["links"]["acknowledge"].rsplit("/", 1)[1]
    assert later.startswith("k-rotated.")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/{outstanding}") as r:
            assert r.status == 200, await r.text()
        async with _incident_stub(stack) as stub:
            await _wait_status(
                stub, first["incident"]["id"], incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED
            )
        # Retire the old key: its links stop working, the new key's keep working.
        stack.write_secret("link-keys", f"k-rotated:{new_secret}")
        await stack.restart("notification", signal.SIGTERM)
        async with session.get(f"{base}/{outstanding}") as r:
            assert r.status == 403
            assert "no longer valid" in await r.text()
        async with session.get(f"{base}/{later}") as r:
            assert r.status == 200, await r.text()


# --- contact look-ups in batches -------------------------------------------------------------


async def test_escalation_answers_a_batch_of_contact_look_ups_one_result_each(
    stack: Stack,
) -> None:
    asked = [("nina", "nina-hook"), ("ghost", "x"), ("dora", "dora-bad"), ("nina", "pager")]
    async with stack.channel("escalation") as channel:
        stub = oncall_service_pb2_grpc.OnCallServiceStub(channel)
        reply = await stub.GetContactMethods(
            oncall_service_pb2.GetContactMethodsRequest(
                lookups=[
                    oncall_service_pb2.GetContactMethodRequest(user_id=u, contact_method_id=c)
                    for u, c in [*asked, ("", "x")]
                ]
            )
        )
        results = list(reply.results)
        assert [r.WhichOneof("result") for r in results] == [
            "contact_method",
            "error",
            "contact_method",
            "error",
            "error",
        ]
        assert (results[0].contact_method.user_name, results[0].contact_method.type) == (
            "Nina",
            "webhook",
        )
        assert results[2].contact_method.address == "http://127.0.0.1:31931/always-400"
        # Each error is the one the single look-up answers.
        for result, (user, method) in [(results[1], asked[1]), (results[3], asked[3])]:
            with pytest.raises(grpc.aio.AioRpcError) as single:
                await stub.GetContactMethod(
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id=user, contact_method_id=method
                    )
                )
            assert result.error.code == single.value.code().value[0]
            assert result.error.message == single.value.details()
        assert results[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

        too_many = oncall_service_pb2.GetContactMethodsRequest(
            lookups=[oncall_service_pb2.GetContactMethodRequest(user_id="nina")] * 1001
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetContactMethods(too_many)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("lookups:")

        # Notification's adapter: contacts, and final errors for what does not exist.
        found = await GrpcContacts(stub).many(asked, [])
        assert [getattr(f, "contact_method_id", None) for f in found] == [
            "nina-hook",
            None,
            "dora-bad",
            None,
        ]
        assert all(isinstance(f, DeliveryError) and not f.retryable for f in found[1::2])


async def test_pages_to_different_people_in_one_burst_are_all_delivered(
    stack: Stack, failing_peer: FailingPeer
) -> None:
    # Different contact methods at once: their look-ups share a GetContactMethods call.
    nina, dora, ghost = (
        request("nina", "nina-hook", "burst a"),
        request("dora", "dora-burst", "burst b"),
        request("nina", "nina-nope", "burst c"),
    )
    before = len(stack.pages.requests)
    await produce(
        stack,
        *((r.user_id, r.SerializeToString()) for r in (nina, dora, ghost)),
    )
    Outcome = notification_pb2.DeliveryOutcome
    wanted = {r.incident.incident_id for r in (nina, dora, ghost)}

    def final(values: list[bytes]) -> dict[str, int]:
        return {
            s.incident_id: s.outcome
            for s in map(notification_pb2.NotificationStatus.FromString, values)
            if s.incident_id in wanted
            and s.outcome in (Outcome.DELIVERY_OUTCOME_DELIVERED, Outcome.DELIVERY_OUTCOME_FAILED)
        }

    values = await read_topic(stack, "notifications.status", lambda vs: len(final(vs)) == 3)
    outcomes = final(values)
    assert outcomes[nina.incident.incident_id] == Outcome.DELIVERY_OUTCOME_DELIVERED
    assert outcomes[dora.incident.incident_id] == Outcome.DELIVERY_OUTCOME_DELIVERED
    assert outcomes[ghost.incident.incident_id] == Outcome.DELIVERY_OUTCOME_FAILED  # no retry
    await stack.pages.wait_for(before + 1, timeout=30)
    assert any(
        p.json()["incident"]["id"] == nina.incident.incident_id
        for p in stack.pages.requests[before:]
    )
    assert any(
        path == "/burst" and body["incident"]["id"] == dora.incident.incident_id
        for path, body in failing_peer.requests
    )
