"""Config-owned resources through the REST API against the real services: services with
their integration keys masked and their heartbeats, escalation policies, users (me, contact
methods, notification rules: one's own unless manager/admin), and a test page."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.api_client import assert_problem, client, user_client
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_services_show_masked_keys_to_their_team_only(stack: Stack) -> None:
    async with await user_client(stack, "api-viewer") as viewer:
        listed = (await viewer.get("/services")).json()["services"]
        assert [s["id"] for s in listed] == ["api-svc"]  # not the other team's
        (service,) = listed
        assert service["integrations"] == [{"key": "****0001", "type": "any", "name": "tests"}]
        assert "itapisvc" not in (await viewer.get("/services/api-svc")).text
        assert service["heartbeat_ids"] == ["api-hb"]
        assert service["maintenance_windows"][0]["description"] == "planned upgrade"
        denied = assert_problem(await viewer.get("/services/api-other-svc"), 403)
        assert "viewer" in denied["detail"]
        assert_problem(await viewer.get("/services/no-such-service"), 404)
        beats = (await viewer.get("/services/api-svc/heartbeats")).json()["heartbeats"]
        assert [(h["id"], h["interval_seconds"]) for h in beats] == [("api-hb", 3600.0)]
    async with await user_client(stack, "api-out") as outsider:
        assert_problem(await outsider.get("/services/api-svc/heartbeats"), 403)


async def test_escalation_policies(stack: Stack) -> None:
    async with await user_client(stack, "api-viewer") as viewer:
        ids = [
            p["id"]
            for p in (await viewer.get("/escalation_policies")).json()["escalation_policies"]
        ]
        assert "api-policy" in ids
        policy = (await viewer.get("/escalation_policies/api-policy")).json()
        assert policy["levels"] == [
            {"delay_seconds": 3600.0, "targets": [{"type": "schedule", "id": "api-rota"}]}
        ]
        assert_problem(await viewer.get("/escalation_policies/nope"), 404)


async def test_users_me_contact_methods_and_rules(stack: Stack) -> None:
    async with await user_client(stack, "api-resp") as ana:
        me = (await ana.get("/users/me")).json()
        assert me["id"] == "api-resp" and me["kind"] == "user"
        assert (
            me["team_roles"] == {"api-team": "responder"} and me["user"]["name"] == "Ana Responder"
        )
        own = (await ana.get("/users/api-resp/contact_methods")).json()["contact_methods"]
        assert [(c["id"], c["type"], c["name"]) for c in own] == [
            ("ana-hook", "webhook", "Ana's hook")
        ]
        assert own[0]["address"].endswith("/pages/api-resp")
        rules = (await ana.get("/users/api-resp/notification_rules")).json()
        assert rules == {
            "high": [{"delay_seconds": 0.0, "contact_method_id": "ana-hook"}],
            "low": [],
        }
        # Someone else's contact data: only their managers (and admins).
        assert_problem(await ana.get("/users/api-mgr/contact_methods"), 403)
        assert_problem(await ana.get("/users/api-mgr/notification_rules"), 403)
        assert (await ana.get("/users/api-mgr")).json()["name"] == "Mo Manager"  # her team's
        assert_problem(await ana.get("/users/api-out"), 403)  # another team's
        assert_problem(await ana.get("/users/nobody"), 404)
    async with await user_client(stack, "api-mgr") as mo:
        theirs = (await mo.get("/users/api-resp/contact_methods")).json()["contact_methods"]
        assert [c["id"] for c in theirs] == ["ana-hook"]
        team = {u["id"] for u in (await mo.get("/users")).json()["users"]}
        assert "api-resp" in team and "api-out" not in team


async def test_a_test_notification_reaches_the_contact_method(stack: Stack) -> None:
    before = len(stack.pages.requests)
    async with await user_client(stack, "api-resp") as ana:
        reply = await ana.post("/users/api-resp/contact_methods/ana-hook/test")
        assert reply.status_code == 200, reply.text
        assert reply.json()["channel"] == "webhook"
        assert_problem(await ana.post("/users/api-mgr/contact_methods/x/test"), 403)
    deadline = time.monotonic() + 20
    while not any(r.path.endswith("/pages/api-resp") for r in stack.pages.requests[before:]):
        assert time.monotonic() < deadline, "no test page arrived"
        await asyncio.sleep(0.2)


async def test_admins_see_everyone(stack: Stack) -> None:
    async with client(stack) as admin:
        me = (await admin.get("/users/me")).json()
        assert me["admin"] is True and me["user"] is None  # the bootstrap admin is no person
        ids = {u["id"] for u in (await admin.get("/users")).json()["users"]}
        assert {"api-resp", "api-out", "api-mgr"} <= ids
