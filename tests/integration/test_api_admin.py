"""Audit and tokens through the REST API against the real services, and the per-token rate
limit, held in Redis across api replicas."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from tocsin.v1 import auth_service_pb2, auth_service_pb2_grpc

from tests.integration.api_client import assert_problem, client, user_client
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_tokens_are_made_listed_used_and_revoked(stack: Stack) -> None:
    async with await user_client(stack, "api-resp") as ana:
        made = await ana.post(
            "/tokens", json={"name": "laptop", "scope": "viewer", "expires_in_days": 7}
        )
        assert made.status_code == 201, made.text
        token = made.json()
        assert token["token"].startswith("tocsin_") and token["subject_id"] == "api-resp"
        assert token["scope"] == "viewer"
        listed = (await ana.get("/tokens")).json()["tokens"]
        assert token["id"] in [t["id"] for t in listed]
        assert all("token" not in t for t in listed)  # the secret is shown once
        # The new token works, capped at viewer.
        async with client(stack, token["token"]) as laptop:
            assert (await laptop.get("/users/me")).json()["scope"] == "viewer"
        assert_problem(await ana.post("/tokens", json={"name": ""}), 400, "name")
        assert_problem(await ana.post("/tokens", json={"name": "x", "subject_id": "api-mgr"}), 403)
        assert (await ana.delete(f"/tokens/{token['id']}")).status_code == 204
        async with client(stack, token["token"]) as revoked:
            assert_problem(await revoked.get("/users/me"), 401)


async def test_the_audit_log_for_admins(stack: Stack) -> None:
    async with await user_client(stack, "api-viewer") as viewer:
        assert_problem(await viewer.post("/incidents/whatever/acknowledge"), 404)
        assert_problem(await viewer.get("/audit_records"), 403)
    async with client(stack) as admin:
        deadline = time.monotonic() + 30
        while True:
            page = (await admin.get("/audit_records", params={"limit": 5})).json()
            if page["audit_records"]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        assert len(page["audit_records"]) <= 5
        record = page["audit_records"][0]
        assert {"actor", "action", "allowed", "reason", "service"} <= set(record)
        if page["next_cursor"]:
            older = await admin.get(
                "/audit_records", params={"limit": 5, "cursor": page["next_cursor"]}
            )
            assert older.status_code == 200
        assert_problem(await admin.get("/audit_records", params={"cursor": "zzz"}), 400, "cursor")
        denied = (
            await admin.get("/audit_records", params={"denied_only": "true", "limit": 100})
        ).json()
        assert all(not r["allowed"] for r in denied["audit_records"])


async def test_the_rate_limit_is_per_token_and_shared_by_replicas(stack: Stack) -> None:
    limit = {"TOCSIN_API_RATE_LIMIT_PER_MINUTE": "5"}
    one = await stack.add_replica("api", env=limit, suffix="rl1")
    two = await stack.add_replica("api", env=limit, suffix="rl2")
    token, _ = await stack.token_for("api-viewer")
    other, _ = await stack.token_for("api-viewer")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers) as http:
        # Wait out the minute's edge so the six requests fall in one window.
        if time.time() % 60 > 50:
            await asyncio.sleep(61 - time.time() % 60)
        answers = []
        for n in range(6):
            port = (one if n % 2 == 0 else two).http_port
            answers.append(await http.get(f"http://127.0.0.1:{port}/api/v1/users/me"))
        assert [a.status_code for a in answers[:5]] == [200] * 5
        limited = assert_problem(answers[5], 429)
        assert "5 requests per minute" in limited["detail"]
        assert 1 <= int(answers[5].headers["retry-after"]) <= 60
        # Another token is counted apart.
        fresh = await http.get(
            f"http://127.0.0.1:{one.http_port}/api/v1/users/me",
            headers={"Authorization": f"Bearer {other}"},
        )
        assert fresh.status_code == 200
    for replica in (one, two):
        replica.kill()


async def test_a_token_revoked_elsewhere_stops_working_at_the_api_within_its_cache_ttl(
    stack: Stack,
) -> None:
    """The api keeps a verified token up to TOCSIN_API_TOKEN_CACHE_SECONDS (5 s): revoked
    over gRPC (as another api replica would), it fails there within that time; a route that
    reaches a service fails at once, since the service checks the token in Redis itself."""
    token, token_id = await stack.token_for("api-resp")
    async with client(stack, token) as api:
        assert (await api.get("/users/me")).status_code == 200  # verified, now cached
        async with stack.channel("escalation") as channel:
            await auth_service_pb2_grpc.AuthServiceStub(channel).RevokeToken(
                auth_service_pb2.RevokeTokenRequest(token_id=token_id)
            )
        revoked_at = time.monotonic()
        assert_problem(await api.get("/incidents"), 401)  # escalation refuses it at once
        while (await api.get("/users/me")).status_code == 200:
            assert time.monotonic() - revoked_at < 5.5, "still accepted past the 5 s TTL"
            await asyncio.sleep(0.2)
        assert_problem(await api.get("/users/me"), 401)
