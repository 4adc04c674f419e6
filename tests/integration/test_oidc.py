"""People log in with OpenID Connect, against a real provider process (oidc-provider-mock).

The test is the person's browser and the client: it builds the authorization request (code
+ PKCE, state, nonce), submits the provider's login form for a chosen subject (whose claims
it set on the provider first), takes the code from the redirect, trades it at the token
endpoint and uses the ID token the provider signed as the bearer credential for the
services (stack_config/60-oidc.yaml). No token is made by the test.

The provider does not offer the device authorization grant; the device flow's client is
tested in tests/unit/test_auth_oidc.py against a local RFC 8628 endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from tocsin.v1 import (
    auth_pb2,
    auth_service_pb2,
    auth_service_pb2_grpc,
    silence_service_pb2,
    silence_service_pb2_grpc,
)
from tocsin_common.auth.oidc import OidcVerifier, discover
from tocsin_common.auth.oidc_login import (
    TokenSet,
    authorization_request,
    client_secret,
    code_from_callback,
    exchange_code,
    verified_identity,
)
from tocsin_common.config import load_config
from tocsin_common.config.model import Oidc
from tocsin_common.secrets import generate_secret

from tests.conftest import OIDC_TOKEN_LIFETIME
from tests.integration.harness import Stack
from tests.integration.test_access import silence
from tests.integration.test_cli import TOCSIN, tocsin

pytestmark = pytest.mark.integration

TOKEN_LIFETIME = OIDC_TOKEN_LIFETIME  # seconds: the provider's --token-max-age
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never reached: the redirect is read, not followed


@pytest.fixture(scope="module")
def provider(oidc_provider: str) -> str:
    """The session's OpenID Connect provider (tests/conftest.py)."""
    return oidc_provider


@pytest.fixture(scope="module")
def settings(stack: Stack) -> Oidc:
    oidc = load_config(stack.config_path).access.oidc
    assert oidc is not None and oidc.issuer == stack.oidc_issuer
    return oidc


async def login(
    provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch, sub: str, **claims: Any
) -> TokenSet:
    """A person's login by authorization code + PKCE: the provider knows ``sub`` with
    ``claims``; the person approves on the provider's form; the client trades the code."""
    monkeypatch.setenv(settings.client_secret_env or "", generate_secret())
    metadata = await discover(settings.issuer)
    request = authorization_request(
        metadata, client_id=settings.client_id, redirect_uri=REDIRECT_URI, scopes=settings.scopes
    )
    async with aiohttp.ClientSession() as browser:
        async with browser.put(f"{provider}/users/{sub}", json=claims) as response:
            assert response.status == 204, await response.text()
        async with browser.get(request.url) as response:  # the provider's login form
            assert response.status == 200 and "form" in await response.text()
        async with browser.post(request.url, data={"sub": sub}, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            callback = response.headers["Location"]
    assert callback.startswith(REDIRECT_URI)
    code = code_from_callback(request, callback)
    tokens = await exchange_code(
        metadata,
        request,
        code,
        client_id=settings.client_id,
        client_secret=client_secret(settings),
    )
    # The client checks what it got as the services will, and that it answers its nonce.
    identity = await verified_identity(OidcVerifier(settings), tokens, request.nonce)
    assert identity["sub"] == sub
    return tokens


async def whoami(stack: Stack, credential: str) -> auth_pb2.Principal:
    async with stack.channel("escalation", credential) as channel:
        principal: auth_pb2.Principal = await auth_service_pb2_grpc.AuthServiceStub(channel).WhoAmI(
            auth_service_pb2.WhoAmIRequest()
        )
    return principal


def roles(principal: auth_pb2.Principal) -> dict[str, int]:
    return {r.team_id: r.role for r in principal.team_roles}


async def test_a_login_maps_groups_to_team_roles(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = await login(
        provider,
        settings,
        monkeypatch,
        "rita-at-idp",
        preferred_username="oidc-rita",
        groups=["sre-leads", "unrelated"],
    )
    me = await whoami(stack, tokens.id_token)
    assert me.id == "oidc-rita" and me.kind == auth_pb2.PRINCIPAL_KIND_USER
    assert roles(me) == {"auth-sre": auth_pb2.ROLE_MANAGER} and not me.admin
    # A manager by group: silences her team's service (correlation), not the other team's.
    async with stack.channel("correlation", tokens.id_token) as channel:
        stub = silence_service_pb2_grpc.SilenceServiceStub(channel)
        created = await stub.CreateSilence(silence("auth-sre-svc"))
        listed = await stub.ListSilences(silence_service_pb2.ListSilencesRequest())
        assert [s.created_by for s in listed.silences if s.silence_id == created.silence_id] == [
            "oidc-rita"
        ]
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateSilence(silence("auth-other-svc"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs manager" in (denied.value.details() or "")
        await stub.ExpireSilence(
            silence_service_pb2.ExpireSilenceRequest(silence_id=created.silence_id)
        )
    # Both decisions are audited with the mapped user as the actor.
    async with stack.channel("escalation") as channel:
        records = (
            await auth_service_pb2_grpc.AuthServiceStub(channel).ListAudit(
                auth_service_pb2.ListAuditRequest(actor="oidc-rita", action="silence.")
            )
        ).records
    decisions = {(r.action, r.allowed) for r in records}
    assert {("silence.create", True), ("silence.create", False)} <= decisions
    assert all(r.actor_kind == auth_pb2.PRINCIPAL_KIND_USER for r in records)


async def test_config_roles_email_matching_and_admin_groups(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Vic is a viewer of auth-sre in the config; his provider name is his email.
    vic = await login(
        provider, settings, monkeypatch, "vic-at-idp", preferred_username="VIC@example.com"
    )
    me = await whoami(stack, vic.id_token)
    assert me.id == "auth-viewer" and roles(me) == {"auth-sre": auth_pb2.ROLE_VIEWER}
    async with stack.channel("correlation", vic.id_token) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await silence_service_pb2_grpc.SilenceServiceStub(channel).CreateSilence(
                silence("auth-sre-svc")
            )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Olga responds for auth-other in the config; a group adds nothing weaker; an admin
    # group makes her an admin.
    olga = await login(
        provider,
        settings,
        monkeypatch,
        "olga-at-idp",
        preferred_username="auth-outsider",
        groups=["other-oncall", "tocsin-admins"],
    )
    me = await whoami(stack, olga.id_token)
    assert me.id == "auth-outsider" and me.admin
    assert roles(me) == {"auth-other": auth_pb2.ROLE_RESPONDER}


async def test_someone_the_config_does_not_know_is_unauthenticated(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = await login(
        provider,
        settings,
        monkeypatch,
        "mallory-at-idp",
        preferred_username="mallory",
        groups=["tocsin-admins"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await whoami(stack, tokens.id_token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "'mallory' is no user" in (refused.value.details() or "")


def payload_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def tampered(token: str, **changes: Any) -> str:
    header, _, signature = token.split(".")
    claims = {**payload_of(token), **changes}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_tampered_and_expired_tokens_are_unauthenticated(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = await login(
        provider, settings, monkeypatch, "ada-at-idp", preferred_username="auth-resp"
    )
    assert (await whoami(stack, tokens.id_token)).id == "auth-resp"
    # Ada makes herself an admin in her token: the provider's signature no longer holds.
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await whoami(stack, tampered(tokens.id_token, groups=["tocsin-admins"]))
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in (forged.value.details() or "")
    # The same token, once past its expiry (no leeway in this stack).
    expiry = payload_of(tokens.id_token)["exp"]
    await asyncio.sleep(max(0.0, expiry - time.time()) + 1.5)
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await whoami(stack, tokens.id_token)
    assert expired.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (expired.value.details() or "")
    async with stack.channel("escalation") as channel:
        records = (
            await auth_service_pb2_grpc.AuthServiceStub(channel).ListAudit(
                auth_service_pb2.ListAuditRequest(actor="anonymous", denied_only=True, limit=1000)
            )
        ).records
    assert any("OIDC token refused: the token has expired" in r.reason for r in records)


async def test_an_oidc_token_works_through_the_rest_api_as_its_person(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The api authenticates the token itself, then forwards it: the services record the
    mapped person (here, not in a module of its own: the services cache this provider's
    keys, and a second provider process would have others)."""
    import httpx

    tokens = await login(
        provider,
        settings,
        monkeypatch,
        "rita-at-idp-api",
        preferred_username="oidc-rita",
        groups=["sre-leads"],
    )
    base = f"{stack.api_url}/api/v1"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {tokens.id_token}"}
    ) as api:
        me = (await api.get("/users/me")).json()
        assert me["id"] == "oidc-rita" and me["team_roles"] == {"auth-sre": "manager"}
        body = {"service_id": "auth-sre-svc", "matchers": ["a=b"], "duration_seconds": 60}
        made = await api.post("/silences", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["created_by"] == "oidc-rita"  # the services saw the person
        assert (await api.delete(f"/silences/{made.json()['id']}")).status_code == 204
        other = await api.post("/silences", json={**body, "service_id": "auth-other-svc"})
        assert other.status_code == 403, other.text
    forged = tampered(tokens.id_token, preferred_username="auth-mgr")
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {forged}"}
    ) as api:
        assert (await api.get("/users/me")).status_code == 401


# ---------------------------------------------------------------------------------------------
# The tocsin CLI's OpenID Connect login (docs/cli.md), here rather than in test_cli.py: the
# services cache this provider's keys, and a second provider process would have others
# ---------------------------------------------------------------------------------------------


async def test_the_cli_logs_in_in_a_browser(stack: Stack, provider: str, tmp_path: Path) -> None:
    """`tocsin login --browser`: authorization code + PKCE with a loopback redirect. The test
    is the person's browser: it opens the URL tocsin prints, approves on the provider's form
    and follows the redirect back to tocsin, which trades the code and keeps the ID token."""
    issuer = provider
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        # The mock provider takes confidential clients only (any secret will do).
        "TOCSIN_OIDC_CLIENT_SECRET": uuid.uuid4().hex,
    }
    proc = await asyncio.create_subprocess_exec(
        TOCSIN,
        "login",
        "--api-url",
        stack.api_url,
        "--issuer",
        issuer,
        "--client-id",
        "tocsin-tests",
        "--client-secret-env",
        "TOCSIN_OIDC_CLIENT_SECRET",
        "--scopes",
        "openid profile email",
        "--browser",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    assert "open this URL in a browser on this machine: " in line, line
    url = line.split("on this machine: ", 1)[1].strip()
    async with aiohttp.ClientSession() as browser:
        async with browser.put(
            f"{issuer}/users/cai-at-idp", json={"preferred_username": "cli-resp"}
        ) as response:
            assert response.status == 204, await response.text()
        async with browser.post(url, data={"sub": "cai-at-idp"}, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            callback = response.headers["Location"]
        assert callback.startswith("http://127.0.0.1:") and "/callback?" in callback
        async with browser.get(callback) as response:  # back to tocsin's loopback listener
            assert response.status == 200 and "Logged in" in await response.text()
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "as cli-resp" in err.decode()

    stored = yaml.safe_load((tmp_path / "tocsin" / "credentials.yaml").read_text())["default"]
    assert stored["kind"] == "oidc" and stored["token"].count(".") == 2  # a JWT
    config = yaml.safe_load((tmp_path / "tocsin" / "config.yaml").read_text())["profiles"]
    assert config["default"]["oidc_client_secret_env"] == "TOCSIN_OIDC_CLIENT_SECRET"
    assert "secret" not in json.dumps(config).replace("client_secret_env", "")
    # The provider's tokens live 12 s, so tocsin tries to renew this one at once (its
    # refresh token, the client's secret from the variable the profile names). This provider
    # answers a refresh with no ID token: tocsin says so and uses the token while it lasts...
    secret_env = {k: env[k] for k in ("XDG_CONFIG_HOME", "TOCSIN_OIDC_CLIENT_SECRET")}
    me = await tocsin("whoami", "-o", "json", env=secret_env)
    assert me.code == 0, me.stderr
    assert me.json()["id"] == "cli-resp"
    assert "could not renew the login" in me.stderr
    # ... and, once it has expired, asks for a new login.
    await asyncio.sleep(max(0.0, stored["expires_at"] - time.time()) + 1)
    expired = await tocsin("whoami", env=secret_env)
    assert expired.code == 3
    assert "the login expired and could not be renewed" in expired.stderr


async def test_the_cli_names_a_provider_without_the_device_grant(
    stack: Stack, provider: str, tmp_path: Path
) -> None:
    issuer = provider
    refused = await tocsin(
        "login",
        "--api-url",
        stack.api_url,
        "--issuer",
        issuer,
        "--client-id",
        "tocsin-tests",
        "--device",
        env={"XDG_CONFIG_HOME": str(tmp_path)},
    )
    assert refused.code == 3
    assert "no device authorization endpoint" in refused.stderr
