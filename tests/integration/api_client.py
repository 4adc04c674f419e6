"""Helpers of the api suites (test_api_*.py): an HTTP client on the stack's api with a
principal's token, and incidents raised through ingest."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from tests.integration.harness import Stack

API_KEY = "itapisvc000000000000000000000001"
OTHER_KEY = "itapiother00000000000000000000001"


def client(stack: Stack, token: str | None = None) -> httpx.AsyncClient:
    """A client of the api; the admin's token by default, "" for none."""
    token = stack.admin_token if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", headers=headers, timeout=30)


async def user_client(stack: Stack, user: str) -> httpx.AsyncClient:
    token, _ = await stack.token_for(user)
    return client(stack, token)


async def trigger(stack: Stack, title: str | None = None, key: str = API_KEY) -> str:
    """An alert through ingest (Events v2); its title (unique by default)."""
    title = title or f"api test {uuid.uuid4().hex[:8]}"
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": title,
        "payload": {"summary": title, "source": "api-tests", "severity": "critical"},
    }
    async with httpx.AsyncClient() as http:
        reply = await http.post(f"{stack.ingest_url}/v2/enqueue", json=body)
    assert reply.status_code == 202, reply.text
    return title


async def incident_titled(
    api: httpx.AsyncClient, title: str, service_id: str = "api-svc", timeout: float = 60
) -> dict[str, Any]:
    """The incident the alert ``title`` opened, once the read side has it."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await api.get("/incidents", params={"service_id": service_id, "limit": 100})
        assert reply.status_code == 200, reply.text
        for incident in reply.json()["incidents"]:
            if incident["title"] == title:
                return dict(incident)
        assert time.monotonic() < deadline, f"no incident {title!r} after {timeout}s"
        await asyncio.sleep(0.2)


async def until_status(
    api: httpx.AsyncClient, incident_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = await api.get(f"/incidents/{incident_id}")
        assert reply.status_code == 200, reply.text
        if reply.json()["status"] == status:
            return dict(reply.json())
        assert time.monotonic() < deadline, f"{incident_id} not {status}: {reply.json()}"
        await asyncio.sleep(0.2)


def assert_problem(reply: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """``reply`` is an RFC 9457 problem of ``status`` (naming ``field`` when given)."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.headers
    body = dict(reply.json())
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body
