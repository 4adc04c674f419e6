"""One alert through all four services, as a story:

an alert POSTed to alert-ingest becomes an incident in correlation; escalation finds who is
on call and asks for a page; notification looks up that person's contact over gRPC from
escalation and delivers to their webhook — and the whole flow is one trace.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, verify

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


def new_trace_id() -> str:
    return os.urandom(16).hex()


async def post_event(
    stack: Stack, body: dict[str, object], trace_id: str | None = None
) -> aiohttp.ClientResponse:
    headers = {}
    if trace_id:
        headers["traceparent"] = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.ingest_url}/v2/enqueue", json=body, headers=headers) as r:
            await r.read()
            return r


async def test_an_alert_pages_the_on_call_user_at_their_webhook_in_one_trace(stack: Stack) -> None:
    trace_id = new_trace_id()
    before = len(stack.pages.requests)
    response = await post_event(
        stack,
        {
            "routing_key": "itcheckout0000000000000000000001",
            "event_action": "trigger",
            "dedup_key": f"skeleton-{trace_id}",
            "payload": {
                "summary": "checkout 5xx above 5%",
                "source": "checkout-7d9f",
                "severity": "critical",
            },
        },
        trace_id,
    )
    assert response.status == 202

    pages = await stack.pages.wait_for(before + 1, timeout=30)
    page = pages[before]
    assert page.path == "/pages/alice"  # alice is on call in the primary schedule
    body = page.json()
    assert body["incident"]["title"] == "checkout 5xx above 5%"
    assert body["incident"]["service"] == "checkout"
    assert body["incident"]["urgency"] == "high"
    assert body["user"]["id"] == "alice"
    assert verify(
        stack.webhook_secret.encode(), page.body, page.headers[SIGNATURE_HEADER], now=time.time()
    )
    # The receiver can continue the same trace.
    assert page.headers["traceparent"].split("-")[1] == trace_id

    expected = {
        ("tocsin-alert-ingest", "POST /v2/enqueue"),
        ("tocsin-alert-ingest", "alerts.normalized publish"),
        ("tocsin-correlation", "alerts.normalized process"),
        ("tocsin-correlation", "incidents.events publish"),
        ("tocsin-escalation", "incidents.events process"),
        ("tocsin-escalation", "notifications.requests publish"),
        ("tocsin-notification", "notifications.requests process"),
        ("tocsin-notification", "tocsin.v1.OnCallService/GetContactMethod"),  # gRPC client
        ("tocsin-escalation", "tocsin.v1.OnCallService/GetContactMethod"),  # gRPC server
        ("tocsin-notification", "webhook POST"),
    }

    def orphans(spans: list[Any]) -> list[str]:
        # One unbroken tree: every span but the caller's root has its parent in the trace.
        ids = {s.span_id for s in spans}
        return [
            s.name for s in spans if s.parent_span_id not in ids and s.name != "POST /v2/enqueue"
        ]

    # Each service exports its spans in batches of its own: wait for the whole tree.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = stack.traces.trace(trace_id)
        if expected <= {(s.service, s.name) for s in spans} and not orphans(spans):
            break
        await asyncio.sleep(0.2)
    spans = stack.traces.trace(trace_id)
    seen = {(s.service, s.name) for s in spans}
    assert expected <= seen, f"missing spans: {sorted(expected - seen)}"
    assert orphans(spans) == [], [(x.service, x.name, x.span_id, x.parent_span_id) for x in spans]


async def test_a_repeated_trigger_is_deduplicated_and_pages_once(stack: Stack) -> None:
    before = len(stack.pages.requests)
    dedup_key = f"skeleton-dedup-{new_trace_id()}"
    event = {
        "routing_key": "itcheckout0000000000000000000001",
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {"summary": "disk full", "source": "db-1", "severity": "error"},
    }
    for _ in range(3):
        assert (await post_event(stack, event)).status == 202
    await stack.pages.wait_for(before + 1, timeout=30)
    await asyncio.sleep(2)  # time for any wrongly duplicated page to arrive
    new = [p for p in stack.pages.requests[before:] if p.json()["incident"]["title"] == "disk full"]
    assert len(new) == 1


async def test_an_unknown_routing_key_is_refused_with_the_field_named(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.ingest_url}/v2/enqueue",
            json={
                "routing_key": "nosuchkey",
                "event_action": "trigger",
                "payload": {"summary": "x", "source": "y", "severity": "info"},
            },
        ) as r,
    ):
        assert r.status == 400
        body = await r.json()
    assert body["fields"] == [{"field": "routing_key", "problem": "is not a known integration key"}]
