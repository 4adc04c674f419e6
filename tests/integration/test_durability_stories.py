"""Durability stories against the real Kafka, Redis and services:

- two escalation replicas (processes) on the one Redis timer store: each timer fires
  once — every level's page of many incidents arrives exactly once;
- a replica killed (SIGKILL) while its incidents' timers are pending or claimed: they
  fire on the other replica, once;
- notification's rate limit per person and contact method survives a restart: the limit
  is kept in Redis, not in the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from tocsin.v1 import incident_pb2, notification_pb2

from tests.integration.harness import ServiceProcess, Stack, free_port
from tests.integration.test_notification_delivery import produce, read_topic, statuses

pytestmark = pytest.mark.integration

KEYS = {
    "pair": "durability00000000000000000000001",
    "kill": "durability00000000000000000000002",
}


async def trigger_many(stack: Stack, story: str, count: int) -> list[str]:
    """`count` incidents on the story's service; their (unique) titles."""
    titles = [f"dur-{story} {os.urandom(4).hex()}" for _ in range(count)]
    async with aiohttp.ClientSession() as session:
        for title in titles:
            body = {
                "routing_key": KEYS[story],
                "event_action": "trigger",
                "dedup_key": title,
                "payload": {"summary": title, "source": "dur-tests", "severity": "critical"},
            }
            async with session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response:
                assert response.status == 202, await response.text()
    return titles


def page_counts(stack: Stack, user: str, titles: list[str]) -> dict[str, int]:
    """How often each incident was in a message to `user`."""
    wanted = set(titles)
    counts = dict.fromkeys(titles, 0)
    for page in list(stack.pages.requests):
        if page.path != f"/pages/{user}":
            continue
        body = page.json()
        # A burst to one person is bundled: one message listing its incidents.
        listed = body.get("incidents") or [body.get("incident", {})]
        for incident in listed:
            title = incident.get("title")
            if title in wanted:
                counts[title] += 1
    return counts


async def wait_every(stack: Stack, user: str, titles: list[str], timeout: float) -> dict[str, int]:
    """Wait until every incident paged `user` at least once; the page counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = page_counts(stack, user, titles)
        if all(counts.values()) or time.monotonic() > deadline:
            missing = [t for t, n in counts.items() if n == 0]
            assert not missing, (
                f"{user}: no page for {len(missing)} of {len(titles)}: {missing[:3]}"
            )
            return counts
        await asyncio.sleep(0.1)


@pytest.fixture
async def second_escalation(stack: Stack) -> AsyncIterator[ServiceProcess]:
    """A second escalation replica in the same consumer group, on the same Redis."""
    base = stack.services["escalation"]
    grpc_port = free_port()
    env = {
        **base.env,
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(free_port()),
        "TOCSIN_HTTP_PORT": str(free_port()),
        "TOCSIN_DATA_DIR": base.env["TOCSIN_DATA_DIR"] + "-2",
    }
    second = ServiceProcess(
        "escalation-2", base.module, env, base.log_path.with_name("escalation-2.log"), grpc_port
    )
    second.start()
    try:
        await second.wait_healthy()
        yield second
    finally:
        second.kill(signal.SIGTERM)


async def test_two_escalation_replicas_fire_each_timer_once(
    stack: Stack, second_escalation: ServiceProcess
) -> None:
    # 40 incidents, each with two timers (level 2 after 1 s, level 3 after 2 s) due while
    # both replicas poll the one timer store every 100 ms.
    titles = await trigger_many(stack, "pair", 40)
    first = await wait_every(stack, "dur-pia", titles, timeout=60)
    second = await wait_every(stack, "dur-pete", titles, timeout=60)
    third = await wait_every(stack, "dur-quinn", titles, timeout=60)
    await asyncio.sleep(3)  # a second firing, if any, would have paged by now
    for user, seen in (("dur-pia", first), ("dur-pete", second), ("dur-quinn", third)):
        counts = page_counts(stack, user, titles)
        assert set(counts.values()) == {1}, (user, {t: n for t, n in counts.items() if n != 1})
        assert counts == seen
    assert second_escalation.proc is not None and second_escalation.proc.poll() is None


async def test_a_killed_replicas_timers_fire_on_the_other_once(
    stack: Stack, second_escalation: ServiceProcess
) -> None:
    titles = await trigger_many(stack, "kill", 24)
    await wait_every(stack, "dur-kim", titles, timeout=60)
    # Level 2 comes due 3 s after each level 1: kill the second replica around then, so it
    # dies with timers pending and some claimed (those come back after their 30 s lease).
    await asyncio.sleep(2.8)
    second_escalation.kill(signal.SIGKILL)
    await wait_every(stack, "dur-kurt", titles, timeout=90)
    await asyncio.sleep(3)
    counts = page_counts(stack, "dur-kurt", titles)
    assert set(counts.values()) == {1}, {t: n for t, n in counts.items() if n != 1}
    assert set(page_counts(stack, "dur-kim", titles).values()) == {1}


def rosa_request() -> notification_pb2.NotificationRequest:
    incident_id = str(uuid.uuid4())
    return notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=f"{incident_id}:1:0:dur-rosa:0",
        user_id="dur-rosa",
        contact_method_id="rosa-hook",
        escalation_level=1,
        urgency=incident_pb2.URGENCY_HIGH,
        incident=incident_pb2.Incident(
            incident_id=incident_id,
            service_id="dur-pair",
            title=f"rosa {incident_id}",
            status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
            urgency=incident_pb2.URGENCY_HIGH,
        ),
    )


def rosa_pages(stack: Stack) -> list[str]:
    return [
        page.json()["incident"]["id"]
        for page in list(stack.pages.requests)
        if page.path == "/pages/dur-rosa"
    ]


async def wait_rosa(stack: Stack, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while len(rosa_pages(stack)) < count:
        assert time.monotonic() < deadline, f"dur-rosa: {len(rosa_pages(stack))} of {count}"
        await asyncio.sleep(0.05)
    return time.monotonic()


RATE_WINDOW_S = 30.0


@pytest.fixture
async def limited_notification(stack: Stack) -> AsyncIterator[ServiceProcess]:
    """notification with 2 messages per contact method per 30 s and no bundling window;
    the stack's own settings again afterwards."""
    service = stack.services["notification"]
    original = dict(service.env)
    service.env.update(
        TOCSIN_NOTIFY_RATE_LIMIT="2",
        TOCSIN_NOTIFY_RATE_WINDOW_S=str(RATE_WINDOW_S),
        TOCSIN_NOTIFY_BUNDLE_WINDOW_S="0",
    )
    await stack.restart("notification", signal.SIGTERM)
    try:
        yield service
    finally:
        service.env = original
        await stack.restart("notification", signal.SIGTERM)


async def test_a_restart_keeps_the_rate_limit(
    stack: Stack, limited_notification: ServiceProcess
) -> None:
    assert rosa_pages(stack) == []
    first, second, third = rosa_request(), rosa_request(), rosa_request()
    await produce(stack, ("dur-rosa", first.SerializeToString()))
    first_seen = await wait_rosa(stack, 1, timeout=30)
    await produce(stack, ("dur-rosa", second.SerializeToString()))
    await wait_rosa(stack, 2, timeout=30)  # two in the window: the limit is reached
    await stack.restart("notification")  # SIGKILL: the process forgets everything
    await produce(stack, ("dur-rosa", third.SerializeToString()))
    third_seen = await wait_rosa(stack, 3, timeout=RATE_WINDOW_S + 30)
    # Held until the first message left the window, though this process never sent it.
    assert third_seen - first_seen >= RATE_WINDOW_S - 1.0, third_seen - first_seen
    assert rosa_pages(stack) == [r.incident.incident_id for r in (first, second, third)]
    Outcome = notification_pb2.DeliveryOutcome
    values = await read_topic(
        stack,
        "notifications.status",
        lambda vs: any(
            s.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
            for s in statuses(vs, third.incident.incident_id)
        ),
    )
    outcomes = [s.outcome for s in statuses(values, third.incident.incident_id)]
    assert Outcome.DELIVERY_OUTCOME_RATE_LIMITED in outcomes, outcomes
