"""The incident stream (Server-Sent Events) against the real services: events arrive live
with their Watch positions as ids, and an event published while a client was disconnected
arrives once it reconnects with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tocsin_api import sse

from tests.integration.api_client import assert_problem, client, incident_titled, trigger
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The stream's incident events as they come: {id, event, data (parsed)}."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            for parsed in sse.parse(block + "\n\n"):
                yield {**parsed, "data": json.loads(parsed["data"])}


async def first_matching(
    response: httpx.Response, title: str, type_: str, timeout: float = 30
) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for event in events(response):
            data = event["data"]
            if data["incident"]["title"] == title and data["type"] == type_:
                return event
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), timeout)


async def test_an_event_published_while_disconnected_arrives_after_reconnecting(
    stack: Stack,
) -> None:
    async with client(stack) as api:
        async with api.stream("GET", "/incidents/stream", params={"service_id": "api-svc"}) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            title = await trigger(stack)
            opened = await first_matching(live, title, "triggered")
        assert opened["id"], "every event carries its position"
        incident_id = opened["data"]["incident"]["id"]

        # Disconnected: the incident is acknowledged meanwhile.
        acked = await api.post(f"/incidents/{incident_id}/acknowledge")
        assert acked.status_code == 202
        deadline = time.monotonic() + 30
        while (await api.get(f"/incidents/{incident_id}")).json()["status"] != "acknowledged":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

        # Reconnecting after the last event seen replays what was missed, in order.
        async with api.stream(
            "GET", "/incidents/stream", headers={"Last-Event-ID": opened["id"]}
        ) as resumed:
            assert resumed.status_code == 200
            missed = await first_matching(resumed, title, "acknowledged")
        assert missed["data"]["incident"]["status"] == "acknowledged"
        assert missed["data"]["actor"] == "tocsin-admin"
        assert missed["id"] != opened["id"]

        # The same through the query parameter, for clients that cannot set the header.
        async with api.stream(
            "GET", "/incidents/stream", params={"last_event_id": opened["id"]}
        ) as again:
            assert (await first_matching(again, title, "acknowledged"))["id"] == missed["id"]

        # A position that is not one is refused before the stream starts.
        bad = await api.get("/incidents/stream", headers={"Last-Event-ID": "nonsense"})
        assert_problem(bad, 400, "Last-Event-ID")


async def test_the_stream_shows_only_what_the_caller_may_read(stack: Stack) -> None:
    token, _ = await stack.token_for("api-out")  # responds for api-other only
    async with client(stack, token) as outsider, client(stack) as admin:
        async with outsider.stream("GET", "/incidents/stream") as live:
            mine = await trigger(stack)  # api-svc: not theirs
            await incident_titled(admin, mine)  # applied before theirs is sent
            theirs = await trigger(stack, key="itapiother00000000000000000000001")
            seen: list[dict[str, Any]] = []

            async def until_theirs() -> None:
                async for event in events(live):
                    seen.append(event["data"])
                    if event["data"]["incident"]["title"] == theirs:
                        return

            await asyncio.wait_for(until_theirs(), 30)
        assert {e["incident"]["service_id"] for e in seen} == {"api-other-svc"}, seen
    async with client(stack, "") as anonymous:
        assert_problem(await anonymous.get("/incidents/stream"), 401)
