"""The REST API's incidents against the real services: list and filters, get with its ETag,
timeline, alerts, deliveries; acknowledge, resolve, snooze, reassign, notes singly and in
bulk; a stale ETag refused with 412; errors as problem+json."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.integration.api_client import (
    OTHER_KEY,
    assert_problem,
    client,
    incident_titled,
    trigger,
    until_status,
    user_client,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_a_responder_lists_gets_and_acknowledges_an_incident(stack: Stack) -> None:
    title = await trigger(stack)
    async with await user_client(stack, "api-resp") as api:
        incident = await incident_titled(api, title)
        assert incident["status"] == "triggered" and incident["service_id"] == "api-svc"
        assert incident["urgency"] == "high" and incident["severity"] == "critical"

        got = await api.get(f"/incidents/{incident['id']}")
        assert got.status_code == 200 and got.headers["etag"] == got.json()["etag"]

        filtered = await api.get("/incidents", params={"status": "resolved", "limit": 100})
        assert incident["id"] not in [i["id"] for i in filtered.json()["incidents"]]

        acked = await api.post(
            f"/incidents/{incident['id']}/acknowledge", headers={"If-Match": got.headers["etag"]}
        )
        assert acked.status_code == 202, acked.text
        assert acked.json()["incident_id"] == incident["id"] and acked.json()["command_id"]
        after = await until_status(api, incident["id"], "acknowledged")
        assert after["etag"] != incident["etag"]

        # The ETag read before the acknowledgement is stale now: refused, not applied.
        stale = await api.post(
            f"/incidents/{incident['id']}/resolve", headers={"If-Match": got.headers["etag"]}
        )
        assert_problem(stale, 412)
        assert (await api.get(f"/incidents/{incident['id']}")).json()["status"] == "acknowledged"

        timeline = (await api.get(f"/incidents/{incident['id']}/log_entries")).json()
        types = [e["type"] for e in timeline["log_entries"]]
        assert types[0] == "triggered" and "acknowledged" in types
        ack = next(e for e in timeline["log_entries"] if e["type"] == "acknowledged")
        assert ack["actor"] == "api-resp"  # the caller's credential reached escalation

        alerts = (await api.get(f"/incidents/{incident['id']}/alerts")).json()["alerts"]
        assert [a["summary"] for a in alerts] == [title]
        assert alerts[0]["integration_key"] == "****0001"

        deliveries = await api.get(f"/incidents/{incident['id']}/deliveries")
        assert deliveries.status_code == 200 and "deliveries" in deliveries.json()


async def test_pages_follow_the_cursor_without_repeats(stack: Stack) -> None:
    titles = [await trigger(stack) for _ in range(3)]
    async with client(stack) as api:
        for title in titles:
            await incident_titled(api, title)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"service_id": "api-svc", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await api.get("/incidents", params=params)).json()
            assert len(page["incidents"]) <= 2
            seen += [i["id"] for i in page["incidents"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) >= 3
        # A cursor of other filters is refused, naming the parameter.
        other = await api.get("/incidents", params={"cursor": "not-a-cursor"})
        assert_problem(other, 400, "cursor")


async def test_snooze_reassign_note_and_resolve(stack: Stack) -> None:
    title = await trigger(stack)
    async with await user_client(stack, "api-resp") as api:
        incident = await incident_titled(api, title)
        path = f"/incidents/{incident['id']}"
        assert (await api.post(f"{path}/notes", json={"content": "looking"})).status_code == 202
        snoozed = await api.post(f"{path}/snooze", json={"duration_seconds": 600})
        assert snoozed.status_code == 202, snoozed.text
        reassigned = await api.post(f"{path}/reassign", json={"user_ids": ["api-mgr"]})
        assert reassigned.status_code == 202, reassigned.text
        assert_problem(await api.post(f"{path}/reassign", json={}), 400, "user_ids")
        assert_problem(
            await api.post(f"{path}/snooze", json={"duration_seconds": 0}), 400, "duration_seconds"
        )
        assert_problem(await api.post(f"{path}/notes", json={"content": ""}), 400, "content")
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            got = (await api.get(path)).json()
            if got["assigned_user_id"] == "api-mgr" and got["snoozed_until"]:
                break
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.2)
        entries = (await api.get(f"{path}/log_entries")).json()["log_entries"]
        assert {"note_added", "snoozed", "reassigned"} <= {e["type"] for e in entries}
        assert (await api.post(f"{path}/resolve")).status_code == 202
        await until_status(api, incident["id"], "resolved")


async def test_bulk_applies_each_item_and_refuses_stale_etags(stack: Stack) -> None:
    titles = [await trigger(stack) for _ in range(3)]
    async with await user_client(stack, "api-resp") as api:
        incidents = [await incident_titled(api, t) for t in titles]
        fresh, stale, unknown = incidents[0], incidents[1], "no-such-incident"
        # Make the second's etag stale: acknowledge it first.
        assert (await api.post(f"/incidents/{stale['id']}/acknowledge")).status_code == 202
        await until_status(api, stale["id"], "acknowledged")
        reply = await api.post(
            "/incidents/bulk",
            json={
                "action": "resolve",
                "incidents": [
                    {"id": fresh["id"], "etag": fresh["etag"]},
                    {"id": stale["id"], "etag": stale["etag"]},
                    {"id": incidents[2]["id"]},
                    {"id": unknown},
                ],
            },
        )
        assert reply.status_code == 200, reply.text
        results = {r["id"]: r for r in reply.json()["results"]}
        assert results[fresh["id"]]["status"] == 202 and results[fresh["id"]]["command_id"]
        assert results[stale["id"]]["status"] == 412
        assert results[incidents[2]["id"]]["status"] == 202
        assert results[unknown]["status"] == 404
        await until_status(api, fresh["id"], "resolved")
        await until_status(api, incidents[2]["id"], "resolved")
        assert (await api.get(f"/incidents/{stale['id']}")).json()["status"] == "acknowledged"
        missing = await api.post(
            "/incidents/bulk", json={"action": "snooze", "incidents": [{"id": fresh["id"]}]}
        )
        assert_problem(missing, 400, "duration_seconds")


async def test_who_may_see_and_act(stack: Stack) -> None:
    title = await trigger(stack, key=OTHER_KEY)
    async with client(stack) as admin:
        other = await incident_titled(admin, title, "api-other-svc")
        # Readable by one who may (so the 404s below are the team's, not a missing route).
        for part in ("deliveries", "automation/approvals"):
            assert (await admin.get(f"/incidents/{other['id']}/{part}")).status_code == 200
    # No credential, or a bad one: 401 before any service is asked.
    async with client(stack, "") as anonymous:
        assert_problem(await anonymous.get("/incidents"), 401)
    async with client(stack, "tocsin_not-a-token") as bad:
        reply = await bad.get("/incidents")
        assert_problem(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"
    # Another team's incident is not found for api-resp, and not in their list.
    async with await user_client(stack, "api-resp") as api:
        assert_problem(await api.get(f"/incidents/{other['id']}"), 404)
        # Nor what hangs off it in notification: its deliveries and automation approvals.
        for part in ("deliveries", "automation/approvals"):
            assert_problem(await api.get(f"/incidents/{other['id']}/{part}"), 404)
        listed = await api.get("/incidents", params={"limit": 100})
        assert other["id"] not in [i["id"] for i in listed.json()["incidents"]]
    # A viewer reads but may not act: 403 with the reason.
    mine = await trigger(stack)
    async with await user_client(stack, "api-viewer") as viewer:
        incident = await incident_titled(viewer, mine)
        denied = assert_problem(await viewer.post(f"/incidents/{incident['id']}/acknowledge"), 403)
        assert "responder" in denied["detail"]


async def test_bad_input_is_a_problem_naming_the_field(stack: Stack) -> None:
    async with client(stack) as api:
        assert_problem(await api.get("/incidents", params={"limit": 0}), 400, "limit")
        assert_problem(await api.get("/incidents", params={"status": "open"}), 400, "status[0]")
        assert_problem(await api.get("/incidents", params={"since": "yesterday"}), 400, "since")
        not_json = await api.post(
            "/incidents/x/notes", content=b"{", headers={"content-type": "application/json"}
        )
        assert_problem(not_json, 400)
        huge = await api.post("/incidents/x/notes", json={"content": "x" * 70_000})
        assert_problem(huge, 413)
        assert_problem(await api.get("/no/such/route"), 404)


async def test_health_and_the_openapi_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        doc = (await http.get("/api/v1/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        assert "/api/v1/incidents/{incident_id}/acknowledge" in doc["paths"]
        assert (await http.get("/api/v1/docs")).status_code == 200


async def test_a_request_is_one_trace_from_the_caller_through_escalation(stack: Stack) -> None:
    trace_id = uuid.uuid4().hex
    parent = "00f067aa0ba902b7"
    async with client(stack) as api:
        reply = await api.get(
            "/incidents", params={"limit": 1}, headers={"traceparent": f"00-{trace_id}-{parent}-01"}
        )
        assert reply.status_code == 200
    deadline = time.monotonic() + 15
    while True:
        spans = stack.traces.trace(trace_id)
        names = {(s.service, s.name) for s in spans}
        # Each process exports in batches of its own: wait for both ends of the call.
        if {
            ("tocsin-escalation", "tocsin.v1.IncidentService/List"),
            ("tocsin-api", "tocsin.v1.IncidentService/List"),
            ("tocsin-api", "GET /api/v1/incidents"),
        } <= names:
            break
        assert time.monotonic() < deadline, names
        await asyncio.sleep(0.2)
    servers = [s for s in spans if s.service == "tocsin-api" and s.kind == 2]
    assert [(s.name, s.parent_span_id) for s in servers] == [("GET /api/v1/incidents", parent)]
    by_id = {s.span_id: s for s in spans}
    (listed,) = [s for s in spans if s.service == "tocsin-escalation"]
    client_span = by_id[listed.parent_span_id]  # the api's gRPC call ...
    assert client_span.service == "tocsin-api" and client_span.kind == 3
    ancestor = client_span  # ... inside the api's request span
    while ancestor.parent_span_id in by_id:
        ancestor = by_id[ancestor.parent_span_id]
    assert ancestor.span_id == servers[0].span_id


async def test_filters_by_team_urgency_and_creation_time(stack: Stack) -> None:
    title = await trigger(stack)
    async with client(stack) as api:
        incident = await incident_titled(api, title)
        created = incident["created_at"]

        async def ids(**params: str) -> list[str]:
            reply = await api.get("/incidents", params={"limit": 100, **params})
            assert reply.status_code == 200, reply.text
            return [i["id"] for i in reply.json()["incidents"]]

        assert incident["id"] in await ids(team_id="api-team", urgency="high", since=created)
        assert incident["id"] not in await ids(team_id="api-other")
        assert incident["id"] not in await ids(urgency="low")
        assert incident["id"] not in await ids(until=created)  # created before: exclusive
        assert_problem(
            await api.get("/incidents", params={"since": "2026-01-02T00:00:00"}), 400, "since"
        )


async def test_a_service_that_is_down_is_a_503_to_retry(stack: Stack) -> None:
    async with client(stack) as api:
        stack.services["notification"].kill()
        try:
            reply = await api.get("/incidents/any/deliveries")
            assert_problem(reply, 503)
            assert reply.headers["retry-after"] == "1"
        finally:
            stack.services["notification"].start()
            await stack.services["notification"].wait_healthy()
        # As a client told Retry-After: 1 would: the api dials the service again within
        # 2 s of its return (gRPC's default back-off grew to minutes), so a few tries do.
        for _ in range(5):
            recovered = await api.get("/incidents/any/deliveries")
            if recovered.status_code != 503:
                break
            await asyncio.sleep(1)
        assert_problem(recovered, 404)  # answered again: no such incident
