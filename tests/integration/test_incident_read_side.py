"""IncidentService's read side against the real stack: filtered List pages return exactly
what matches, Watch resumes from a position without a gap, resolved incidents expire."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis
from tocsin.v1 import incident_pb2, incident_service_pb2, incident_service_pb2_grpc

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

KEYS = {"rs-a": "itreadsidea000000000000000000001", "rs-b": "itreadsideb000000000000000000001"}
RESOLVED = incident_pb2.INCIDENT_STATUS_RESOLVED
TRIGGERED = incident_pb2.INCIDENT_STATUS_TRIGGERED
Stub = incident_service_pb2_grpc.IncidentServiceStub


async def trigger(stack: Stack, service: str, title: str) -> None:
    body = {
        "routing_key": KEYS[service],
        "event_action": "trigger",
        "dedup_key": title,
        "payload": {"summary": title, "source": "read-side-tests", "severity": "critical"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response,
    ):
        assert response.status == 202, await response.text()


async def list_all(
    stub: Stub, request: incident_service_pb2.ListIncidentsRequest
) -> tuple[list[incident_pb2.Incident], list[int]]:
    """Every page of a List: the incidents in order and each page's size."""
    found: list[incident_pb2.Incident] = []
    sizes = []
    while True:
        page = await stub.List(request)
        found += page.incidents
        sizes.append(len(page.incidents))
        if not page.next_page_token:
            return found, sizes
        request.page_token = page.next_page_token


async def wait_for(
    stub: Stub, titles: set[str], ready: Callable[[incident_pb2.Incident], bool]
) -> dict[str, incident_pb2.Incident]:
    deadline = time.monotonic() + 60
    while True:
        listed, _ = await list_all(
            stub, incident_service_pb2.ListIncidentsRequest(service_ids=["rs-a", "rs-b"])
        )
        mine = {i.title: i for i in listed if i.title in titles}
        if len(mine) == len(titles) and all(ready(i) for i in mine.values()):
            return mine
        assert time.monotonic() < deadline, f"only {len(mine)} of {len(titles)} incidents"
        await asyncio.sleep(0.3)


def newest_first(incidents: list[incident_pb2.Incident]) -> list[str]:
    ordered = sorted(
        incidents, key=lambda i: (i.created_at.ToNanoseconds(), i.incident_id), reverse=True
    )
    return [i.incident_id for i in ordered]


async def test_filtered_lists_return_exactly_the_matching_incidents_across_pages(
    stack: Stack,
) -> None:
    run = os.urandom(3).hex()
    titles = {f"rs {run} {service} {n}": service for service in KEYS for n in range(15)}
    for title, service in titles.items():
        await trigger(stack, service, title)
    async with stack.channel("escalation") as channel:
        stub = Stub(channel)
        mine = await wait_for(stub, set(titles), lambda i: True)
        resolved = {t for n, t in enumerate(sorted(titles)) if n % 2 == 0}
        for title in resolved:
            await stub.Resolve(
                incident_service_pb2.IncidentRef(incident_id=mine[title].incident_id)
            )
        mine = await wait_for(
            stub, set(titles), lambda i: (i.status == RESOLVED) == (i.title in resolved)
        )
        ours = list(mine.values())

        def expect(keep: Callable[[incident_pb2.Incident], bool]) -> list[str]:
            return newest_first([i for i in ours if keep(i)])

        # open incidents of both teams: 15 of 30, over pages of 7
        got, sizes = await list_all(
            stub,
            incident_service_pb2.ListIncidentsRequest(
                teams=["rs-team-a", "rs-team-b"], statuses=[TRIGGERED], limit=7
            ),
        )
        want = expect(lambda i: i.status == TRIGGERED)
        assert [i.incident_id for i in got if i.title in titles] == want
        assert len(want) == 15 and sizes == [7, 7, 1]
        # resolved of one service
        got, _ = await list_all(
            stub,
            incident_service_pb2.ListIncidentsRequest(
                service_ids=["rs-b"], statuses=[RESOLVED], limit=7
            ),
        )
        assert [i.incident_id for i in got] == expect(
            lambda i: i.service_id == "rs-b" and i.status == RESOLVED
        )
        # created in a window, high urgency, any status
        window = sorted(i.created_at.ToNanoseconds() for i in ours)[10:20]
        request = incident_service_pb2.ListIncidentsRequest(
            service_ids=["rs-a", "rs-b"], urgencies=[incident_pb2.URGENCY_HIGH], limit=7
        )
        request.created_since.FromNanoseconds(window[0])
        request.created_until.FromNanoseconds(window[-1])
        got, sizes = await list_all(stub, request)
        assert [i.incident_id for i in got] == expect(
            lambda i: window[0] <= i.created_at.ToNanoseconds() < window[-1]
        )
        assert sizes == [7, 2]
        # a page token with other filters, or a made-up one, names page_token
        first = await stub.List(incident_service_pb2.ListIncidentsRequest(limit=7))
        for token in (first.next_page_token, "nonsense"):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.List(
                    incident_service_pb2.ListIncidentsRequest(
                        service_ids=["rs-a"], limit=7, page_token=token
                    )
                )
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details().startswith("page_token: ")

    # a viewer of team A, unfiltered: every page full of team A's incidents, none of B's
    viewer, _ = await stack.token_for("rs-viewer")
    async with stack.channel("escalation", viewer) as channel:
        got, sizes = await list_all(
            Stub(channel), incident_service_pb2.ListIncidentsRequest(limit=7)
        )
    assert {i.service_id for i in got} == {"rs-a"}
    assert [i.incident_id for i in got if i.title in titles] == expect(
        lambda i: i.service_id == "rs-a"
    )
    assert all(size == 7 for size in sizes[:-1])


async def read_until(
    stream: grpc.aio.UnaryStreamCall,
    events: list[incident_service_pb2.WatchEvent],
    done: Callable[[], bool],
) -> None:
    async def go() -> None:
        async for item in stream:
            events.append(item)
            if done():
                return

    await asyncio.wait_for(go(), 60)


def watcher(
    stack: Stack,
) -> Callable[[incident_service_pb2.WatchRequest], grpc.aio.UnaryStreamCall]:
    """Watch calls with the admin's credential (the channel's interceptors carry it on
    server-streaming calls too)."""
    stub = Stub(stack.channel("escalation"))

    def watch(request: incident_service_pb2.WatchRequest) -> grpc.aio.UnaryStreamCall:
        return stub.Watch(request)

    return watch


async def test_a_watcher_that_reconnects_with_its_position_misses_nothing(stack: Stack) -> None:
    run = os.urandom(3).hex()
    watch = watcher(stack)
    async with stack.channel("escalation") as channel:
        stub = Stub(channel)
        start = (
            await stub.List(incident_service_pb2.ListIncidentsRequest(service_ids=["rs-a"]))
        ).watch_position
        request = incident_service_pb2.WatchRequest(service_ids=["rs-a"], from_position=start)
        # the control stays connected all along
        control_events: list[incident_service_pb2.WatchEvent] = []
        control = watch(request)

        def triggered(events: list[incident_service_pb2.WatchEvent], title: str) -> bool:
            return any(e.event.incident.title == title for e in events)

        first: list[incident_service_pb2.WatchEvent] = []
        client = watch(request)
        for n in range(3):
            await trigger(stack, "rs-a", f"rs watch {run} {n}")
        await read_until(client, first, lambda: triggered(first, f"rs watch {run} 2"))
        client.cancel()  # disconnects; more happens meanwhile
        for n in range(3, 6):
            await trigger(stack, "rs-a", f"rs watch {run} {n}")
        await trigger(stack, "rs-b", f"rs watch {run} other")
        opened = await wait_for(stub, {f"rs watch {run} {n}" for n in range(6)}, lambda i: True)
        await stub.Resolve(
            incident_service_pb2.IncidentRef(incident_id=opened[f"rs watch {run} 4"].incident_id)
        )

        def resolved_4(events: list[incident_service_pb2.WatchEvent]) -> bool:
            return any(
                e.event.incident.title == f"rs watch {run} 4"
                and e.event.incident.status == RESOLVED
                for e in events
            )

        await read_until(control, control_events, lambda: resolved_4(control_events))
        control.cancel()
        rest: list[incident_service_pb2.WatchEvent] = []
        resumed = watch(
            incident_service_pb2.WatchRequest(
                service_ids=["rs-a"], from_position=first[-1].position
            )
        )
        await read_until(resumed, rest, lambda: rest[-1].position == control_events[-1].position)
        resumed.cancel()

    both = [(e.position, e.event.event_id) for e in first + rest]
    assert both == [(e.position, e.event.event_id) for e in control_events]
    assert [p for p, _ in both] == sorted(
        set(p for p, _ in both), key=lambda p: tuple(map(int, p.split("-")))
    )
    assert {e.event.incident.service_id for e in control_events} == {"rs-a"}
    assert {e.event.incident.title for e in rest} >= {f"rs watch {run} {n}" for n in range(3, 6)}


async def test_watch_refuses_a_bad_or_lost_position(stack: Stack) -> None:
    watch = watcher(stack)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in watch(incident_service_pb2.WatchRequest(from_position="soon")):
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("from_position: ")
    redis = Redis.from_url(stack.redis_url)
    try:
        await trigger(stack, "rs-b", f"rs trimmed {os.urandom(3).hex()}")
        deadline = time.monotonic() + 30
        while not await redis.exists("tocsin:incident-stream"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await redis.xtrim("tocsin:incident-stream", maxlen=0)  # as the backlog cap would
    finally:
        await redis.aclose()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in watch(incident_service_pb2.WatchRequest(from_position="0-0")):
            pass
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "limits.watch_backlog" in error.value.details()


async def test_a_resolved_incident_expires_and_leaves_the_indexes(stack: Stack) -> None:
    title, still_open = f"rs ttl {os.urandom(3).hex()}", f"rs open {os.urandom(3).hex()}"
    await trigger(stack, "rs-b", title)
    await trigger(stack, "rs-b", still_open)
    redis = Redis.from_url(stack.redis_url)
    async with stack.channel("escalation") as channel:
        stub = Stub(channel)
        found = await wait_for(stub, {title, still_open}, lambda i: True)
        incident_id, open_id = found[title].incident_id, found[still_open].incident_id
        await stub.Resolve(incident_service_pb2.IncidentRef(incident_id=incident_id))
        await wait_for(stub, {title}, lambda i: i.status == RESOLVED)
        try:
            week = 7 * 24 * 3600
            for key in (
                f"tocsin:incident:{incident_id}",
                f"tocsin:incident:{incident_id}:timeline",
            ):
                assert week - 60 < await redis.ttl(key) <= week, key
            assert await redis.ttl(f"tocsin:incident:{open_id}") == -1
            assert await redis.ttl(f"tocsin:incident:{open_id}:timeline") == -1
            # the retention passes: the keys go, and the next List prunes the indexes
            member = f"{incident_id}\trs-b"
            assert await redis.zscore("tocsin:incidents:expiring", member) is not None
            await redis.zadd("tocsin:incidents:expiring", {member: 1})
            await redis.delete(
                f"tocsin:incident:{incident_id}", f"tocsin:incident:{incident_id}:timeline"
            )
            listed, _ = await list_all(
                stub, incident_service_pb2.ListIncidentsRequest(service_ids=["rs-b"], limit=3)
            )
            assert incident_id not in {i.incident_id for i in listed}
            assert open_id in {i.incident_id for i in listed}
            for key in (
                "tocsin:incidents",
                "tocsin:incidents:by-service:rs-b",
                "tocsin:incidents:by-status:resolved",
                "tocsin:incidents:by-urgency:high",
            ):
                assert await redis.zscore(key, incident_id) is None, key
            assert await redis.zscore("tocsin:incidents:expiring", member) is None
        finally:
            await redis.aclose()
