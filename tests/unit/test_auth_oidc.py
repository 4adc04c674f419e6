"""OIDC: the config section, the token verifier (against keys made here, served by a fake
fetch), the claims -> principal table, the login helpers (PKCE, state, callback) and the
device grant's polling against a local server that speaks RFC 8628."""

from __future__ import annotations

import base64
import json
import re
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tocsin_common.auth.access import Authenticator, AuthFailure
from tocsin_common.auth.oidc import (
    OidcAuthenticator,
    OidcError,
    OidcVerifier,
    ProviderMetadata,
    discover,
    groups_of,
    looks_like_jwt,
    principal_from_claims,
)
from tocsin_common.auth.oidc_login import (
    AuthorizationRequest,
    DeviceAuthorization,
    LoginError,
    TokenSet,
    authorization_request,
    code_challenge,
    code_from_callback,
    device_poll_outcome,
    exchange_code,
    new_code_verifier,
    poll_device_login,
    start_device_login,
)
from tocsin_common.auth.policy import PrincipalKind, Role
from tocsin_common.clock import SystemClock
from tocsin_common.config import ConfigError, parse_config
from tocsin_common.config.model import Oidc, TocsinConfig

ISSUER = "https://login.example.com/realms/acme"
CLIENT = "tocsin"

CONFIG = textwrap.dedent(
    """\
    version: 1
    teams:
      - {id: sre, name: SRE, members: [alice], viewers: [bob]}
      - {id: web, name: Web, members: [dave], managers: [carol]}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
      - {id: bob, name: Bob, email: Bob@Example.com}
      - {id: carol, name: Carol, email: carol@example.com}
      - {id: dave, name: Dave, email: shared@example.com}
      - {id: erin, name: Erin, email: shared@example.com}
    access:
      admins: [carol]
      oidc:
        issuer: https://login.example.com/realms/acme/
        client_id: tocsin
        group_roles:
          - {group: sre-leads, team: sre, role: manager}
          - {group: web-oncall, team: web, role: responder}
          - {group: sre-readers, team: sre, role: viewer}
        admin_groups: [tocsin-admins]
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


@pytest.fixture(scope="module")
def settings(config: TocsinConfig) -> Oidc:
    assert config.access.oidc is not None
    return config.access.oidc


# --- config ---------------------------------------------------------------------------------


def test_oidc_settings_defaults(settings: Oidc) -> None:
    assert settings.issuer == ISSUER  # the trailing slash is dropped
    assert settings.expected_audience == CLIENT
    assert settings.username_claim == "preferred_username"
    assert settings.groups_claim == "groups"
    assert "openid" in settings.scopes
    assert settings.algorithms == ("RS256", "ES256")


@pytest.mark.parametrize(
    ("line", "path", "fragment"),
    [
        ("issuer: http://login.example.com", "access.oidc.issuer", "not https"),
        ("issuer: https://login.example.com?x=1", "access.oidc.issuer", "no query"),
        ("scopes: [profile, email]", "access.oidc.scopes", "must include 'openid'"),
        ("algorithms: [HS256]", "access.oidc.algorithms[0]", "RS256"),
        ("algorithms: []", "access.oidc.algorithms", "must not be empty"),
        ("leeway: 1h", "access.oidc.leeway", "at most 5m"),
        ("client_secret_env: 'my secret'", "access.oidc.client_secret_env", "environment"),
        ("username_claim: ' '", "access.oidc.username_claim", "claim name"),
        ("client_idd: x", "access.oidc.client_idd", "client_id"),
    ],
)
def test_oidc_settings_errors_name_the_field(line: str, path: str, fragment: str) -> None:
    text = CONFIG.replace("    client_id: tocsin\n", f"    client_id: tocsin\n    {line}\n")
    if line.startswith("issuer"):
        text = text.replace("    issuer: https://login.example.com/realms/acme/\n", "", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "tocsin.yaml")
    issues = [i for i in caught.value.issues if i.path == path]
    assert issues, caught.value.issues
    assert fragment in issues[0].message


def test_group_roles_must_name_known_teams() -> None:
    text = CONFIG.replace("{group: web-oncall, team: web,", "{group: web-oncall, team: webb,")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "tocsin.yaml")
    (issue,) = [i for i in caught.value.issues if i.path == "access.oidc.group_roles[1].team"]
    assert "unknown team 'webb'" in issue.message and issue.line == line_of(text, "webb")


def test_http_issuer_is_allowed_on_localhost() -> None:
    text = CONFIG.replace(ISSUER + "/", "http://127.0.0.1:9400")
    oidc = parse_config(text, "tocsin.yaml").access.oidc
    assert oidc is not None and oidc.issuer == "http://127.0.0.1:9400"


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# --- claims -> principal (pure) -------------------------------------------------------------

R, V, M = Role.RESPONDER, Role.VIEWER, Role.MANAGER


@pytest.mark.parametrize(
    ("claims", "user", "roles", "admin"),
    [
        # configured roles alone
        ({"preferred_username": "alice"}, "alice", {"sre": R}, False),
        # a group adds a team; the best role per team wins (viewer config + manager group)
        ({"preferred_username": "bob", "groups": ["sre-leads"]}, "bob", {"sre": M}, False),
        # a weaker group role does not lower a configured one
        ({"preferred_username": "alice", "groups": ["sre-readers"]}, "alice", {"sre": R}, False),
        (
            {"preferred_username": "alice", "groups": ["web-oncall", "unmapped"]},
            "alice",
            {"sre": R, "web": R},
            False,
        ),
        # a single group as a string
        ({"preferred_username": "bob", "groups": "web-oncall"}, "bob", {"sre": V, "web": R}, False),
        # admin by config, and by group
        ({"preferred_username": "carol"}, "carol", {"web": M}, True),
        ({"preferred_username": "alice", "groups": ["tocsin-admins"]}, "alice", {"sre": R}, True),
        # the username claim may hold the email (case-insensitive)
        ({"preferred_username": "bob@example.com"}, "bob", {"sre": V}, False),
    ],
)
def test_claims_map_to_a_principal(
    config: TocsinConfig,
    settings: Oidc,
    claims: dict[str, Any],
    user: str,
    roles: dict[str, Role],
    admin: bool,
) -> None:
    principal = principal_from_claims(config, settings, {"sub": "x", **claims})
    assert principal.id == user and principal.kind is PrincipalKind.USER
    assert dict(principal.team_roles) == roles
    assert principal.admin is admin
    assert principal.scope is Role.ADMIN and principal.token_id == ""


@pytest.mark.parametrize(
    ("claims", "overrides", "fragment"),
    [
        ({"sub": "x"}, {}, "no 'preferred_username' claim"),
        ({"preferred_username": "mallory"}, {}, "'mallory' is no user"),
        ({"preferred_username": "shared@example.com"}, {}, "several users (dave, erin)"),
        ({"preferred_username": "alice", "groups": [1, 2]}, {}, "not a list of group names"),
        (
            {"email": "alice@example.com", "email_verified": False},
            {"username_claim": "email"},
            "not verified",
        ),
    ],
)
def test_claims_refused_with_the_reason(
    config: TocsinConfig,
    settings: Oidc,
    claims: dict[str, Any],
    overrides: dict[str, Any],
    fragment: str,
) -> None:
    with pytest.raises(OidcError) as caught:
        principal_from_claims(config, settings.model_copy(update=overrides), claims)
    assert fragment in str(caught.value)


def test_other_claim_names(config: TocsinConfig, settings: Oidc) -> None:
    custom = settings.model_copy(update={"username_claim": "email", "groups_claim": "roles"})
    principal = principal_from_claims(
        config, custom, {"email": "carol@example.com", "roles": ["sre-leads"], "groups": ["x"]}
    )
    assert principal.id == "carol" and principal.team_roles["sre"] is Role.MANAGER
    assert groups_of({}, "groups") == frozenset()


# --- the verifier ---------------------------------------------------------------------------


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else None
    if algo is None:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(algo.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


class Provider:
    """Keys and documents a fake fetch serves; counts what was fetched."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.jwks: list[dict[str, Any]] = [public_jwk(self.rsa, "r1"), public_jwk(self.ec, "e1")]
        self.fetched: list[str] = []
        self.down = False

    async def fetch(self, url: str) -> Mapping[str, Any]:
        self.fetched.append(url)
        if self.down:
            raise OidcError(f"GET {url} failed: connection refused")
        if url.endswith("/.well-known/openid-configuration"):
            return {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/auth",
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/certs",
            }
        return {"keys": self.jwks}

    def token(self, key: Any = None, kid: str = "r1", alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": CLIENT,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "alice",
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.rsa, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> Provider:
    return Provider()


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier_for(provider: Provider, settings: Oidc, ticks: Ticks | None = None) -> OidcVerifier:
    provider.fetched.clear()
    provider.down = False
    return OidcVerifier(settings, fetch=provider.fetch, monotonic=ticks or Ticks())


async def test_a_good_token_verifies_with_rsa_and_ec(keys: Provider, settings: Oidc) -> None:
    verifier = verifier_for(keys, settings)
    claims = await verifier.verify(keys.token(nonce="n1"), nonce="n1")
    assert claims["preferred_username"] == "alice"
    ec_claims = await verifier.verify(keys.token(key=keys.ec, kid="e1", alg="ES256"))
    assert ec_claims["sub"] == "user-1"
    # discovery and the key set were fetched once, for both tokens
    assert keys.fetched == [f"{ISSUER}/.well-known/openid-configuration", f"{ISSUER}/certs"]


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["preferred_username"] = "carol"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.token(exp=int(time.time()) - 60), "expired"),
        (lambda p: p.token(nbf=int(time.time()) + 600), "not valid yet"),
        (lambda p: p.token(aud="someone-else"), "not meant for Tocsin"),
        (lambda p: p.token(iss="https://evil.example.com"), "issuer"),
        (lambda p: p.token(sub=None), "no 'sub' claim"),
        (lambda p: p.token(exp=None), "no 'exp' claim"),
        (lambda p: tamper(p.token()), "signature does not verify"),
        (lambda p: p.token(key=p.ec, kid="r1", alg="ES256"), "invalid token"),
        (lambda p: p.token(key="a-shared-secret-of-32-bytes-long!", alg="HS256"), "'HS256'"),
        (
            lambda p: jwt.encode({"sub": "x"}, None, algorithm="none"),  # type: ignore[arg-type]
            "'none'",
        ),
        (
            lambda p: p.token(aud=[CLIENT, "other"], azp="other"),
            "issued to client 'other'",
        ),
        (lambda p: "abc.def.ghi", "not a valid JWT"),
    ],
)
async def test_bad_tokens_are_refused_with_the_reason(
    keys: Provider, settings: Oidc, make: Any, fragment: str
) -> None:
    verifier = verifier_for(keys, settings.model_copy(update={"leeway": 0}))
    with pytest.raises(OidcError) as caught:
        await verifier.verify(make(keys))
    assert fragment in str(caught.value)


async def test_leeway_absorbs_small_clock_skew(keys: Provider, settings: Oidc) -> None:
    verifier = verifier_for(keys, settings)  # 30 s
    await verifier.verify(keys.token(exp=int(time.time()) - 10))


async def test_nonce_must_match_the_logins(keys: Provider, settings: Oidc) -> None:
    verifier = verifier_for(keys, settings)
    with pytest.raises(OidcError, match="nonce"):
        await verifier.verify(keys.token(nonce="other"), nonce="mine")


async def test_a_rotated_key_is_fetched_once_per_interval(keys: Provider, settings: Oidc) -> None:
    ticks = Ticks()
    verifier = verifier_for(keys, settings, ticks)
    await verifier.verify(keys.token())
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_token = keys.token(key=rotated, kid="r2")
    # The provider has not published r2 yet, and the last fetch is fresh: no new fetch.
    with pytest.raises(OidcError, match="'r2', which the provider does not list"):
        await verifier.verify(new_token)
    assert keys.fetched.count(f"{ISSUER}/certs") == 1
    # Published; once the refresh interval has passed, the unknown kid fetches the set again.
    keys.jwks.append(public_jwk(rotated, "r2"))
    try:
        ticks.now += settings.jwks_refresh_interval.total_seconds()
        assert (await verifier.verify(new_token))["sub"] == "user-1"
        assert keys.fetched.count(f"{ISSUER}/certs") == 2
        await verifier.verify(keys.token())  # known kids need no fetch
        assert keys.fetched.count(f"{ISSUER}/certs") == 2
    finally:
        keys.jwks.pop()


async def test_an_unreachable_provider_fails_fast(keys: Provider, settings: Oidc) -> None:
    ticks = Ticks()
    verifier = verifier_for(keys, settings, ticks)
    keys.down = True
    for _ in range(3):
        with pytest.raises(OidcError, match="identity provider is unavailable"):
            await verifier.verify(keys.token())
    assert len(keys.fetched) == 1  # the failures after the first did not ask again
    keys.down = False
    ticks.now += 5
    await verifier.verify(keys.token())


async def test_discovery_must_name_the_configured_issuer(keys: Provider) -> None:
    async def fetch(url: str) -> Mapping[str, Any]:
        return {**(await keys.fetch(url)), "issuer": "https://other.example.com"}

    with pytest.raises(OidcError, match=r"names issuer 'https://other\.example\.com'"):
        await discover(ISSUER, fetch)


def test_jwt_shape() -> None:
    assert looks_like_jwt("eyJh.eyJi.c2ln")
    assert looks_like_jwt("a-b_c.d.e")
    # (a service credential, "tocsin-svc.<name>.<mac>", has the shape: it is recognised first)
    for other in ("tocsin_abc", "a.b", "a.b.c.d", "a.b.", "a b.c.d", "a.b.c=="):
        assert not looks_like_jwt(other), other


# --- the authenticator ----------------------------------------------------------------------


class Store:
    def __init__(self, config: TocsinConfig) -> None:
        self.current = config


async def test_authenticator_maps_a_jwt_through_oidc(keys: Provider, config: TocsinConfig) -> None:
    def no_tokens() -> Any:
        raise AssertionError("a JWT must not be looked up as an API token")

    auth = Authenticator(
        no_tokens,
        Store(config),  # type: ignore[arg-type]
        b"s" * 32,
        SystemClock(),
        OidcAuthenticator(keys.fetch),
    )
    principal = await auth.authenticate(f"Bearer {keys.token(groups=['web-oncall'])}")
    assert not isinstance(principal, AuthFailure)
    assert principal.id == "alice" and dict(principal.team_roles) == {"sre": R, "web": R}
    refused = await auth.authenticate(f"Bearer {keys.token(preferred_username='mallory')}")
    assert isinstance(refused, AuthFailure) and "'mallory' is no user" in refused.reason
    bare = parse_config(CONFIG.split("  oidc:")[0], "tocsin.yaml")
    auth_without = Authenticator(
        no_tokens,
        Store(bare),  # type: ignore[arg-type]
        b"s" * 32,
        SystemClock(),
        OidcAuthenticator(keys.fetch),
    )
    refused = await auth_without.authenticate(f"Bearer {keys.token()}")
    assert isinstance(refused, AuthFailure) and "access.oidc is not configured" in refused.reason


def test_the_verifier_follows_config_changes(settings: Oidc) -> None:
    oidc = OidcAuthenticator()
    first = oidc.verifier(settings)
    assert oidc.verifier(settings.model_copy()) is first
    assert oidc.verifier(settings.model_copy(update={"client_id": "other"})) is not first


# --- authorization code + PKCE helpers ------------------------------------------------------

METADATA = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/auth",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/certs",
)


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    fresh = new_code_verifier()
    assert 43 <= len(fresh) <= 128 and fresh != new_code_verifier()
    with pytest.raises(ValueError, match="43 to 128"):
        code_challenge("short")


def test_authorization_url_carries_pkce_state_and_nonce() -> None:
    request = authorization_request(
        METADATA, client_id=CLIENT, redirect_uri="http://127.0.0.1:8765/cb", scopes=["openid"]
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
    assert request.url.startswith(f"{ISSUER}/auth?")
    assert query == {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": "http://127.0.0.1:8765/cb",
        "scope": "openid",
        "state": request.state,
        "nonce": request.nonce,
        "code_challenge": code_challenge(request.code_verifier),
        "code_challenge_method": "S256",
    }
    again = authorization_request(
        METADATA, client_id=CLIENT, redirect_uri="http://x/cb", scopes=["openid"]
    )
    assert again.state != request.state and again.code_verifier != request.code_verifier
    plain_only = ProviderMetadata(
        **{**METADATA.__dict__, "code_challenge_methods_supported": ("plain",)}
    )
    with pytest.raises(LoginError, match="S256"):
        authorization_request(plain_only, client_id=CLIENT, redirect_uri="http://x", scopes=[])


REQUEST = AuthorizationRequest("u", "http://127.0.0.1:8765/cb", "st", "nn", "v" * 43)


@pytest.mark.parametrize(
    ("callback", "outcome"),
    [
        ("http://127.0.0.1:8765/cb?code=abc&state=st", "abc"),
        ("http://127.0.0.1:8765/cb?code=abc&state=forged", "state is not this login's"),
        ("http://127.0.0.1:8765/cb?code=abc", "state is not this login's"),
        (
            "http://127.0.0.1:8765/cb?error=access_denied&error_description=no&state=st",
            "refused the login: access_denied (no)",
        ),
        ("http://127.0.0.1:8765/cb?state=st", "no code"),
    ],
)
def test_code_from_callback(callback: str, outcome: str) -> None:
    if outcome == "abc":
        assert code_from_callback(REQUEST, callback) == "abc"
    else:
        with pytest.raises(LoginError) as caught:
            code_from_callback(REQUEST, callback)
        assert outcome in str(caught.value)


# --- a local token endpoint (RFC 6749 / RFC 8628) -------------------------------------------


class TokenEndpoint:
    """Answers device polls from a script, and records every form it receives."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.auth: list[str | None] = []
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.port = 0

    async def token(self, request: web.Request) -> web.Response:
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        self.auth.append(request.headers.get("Authorization"))
        status, body = self.script.pop(0)
        return web.json_response(body, status=status)

    async def device(self, request: web.Request) -> web.Response:
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        self.auth.append(request.headers.get("Authorization"))
        return web.json_response(
            {
                "device_code": "dev-1",
                "user_code": "WDJB-MJHT",
                "verification_uri": f"http://127.0.0.1:{self.port}/device",
                "expires_in": 600,
                "interval": 2,
            }
        )

    @property
    def metadata(self) -> ProviderMetadata:
        base = f"http://127.0.0.1:{self.port}"
        return ProviderMetadata(
            issuer=base,
            authorization_endpoint=f"{base}/auth",
            token_endpoint=f"{base}/token",
            jwks_uri=f"{base}/certs",
            device_authorization_endpoint=f"{base}/device_authorization",
        )


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    server = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/token", server.token)
    app.router.add_post("/device_authorization", server.device)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server
    await runner.cleanup()


TOKENS = {"id_token": "a.b.c", "access_token": "at", "refresh_token": "rt", "expires_in": 300}


async def test_exchange_code_sends_the_verifier(endpoint: TokenEndpoint) -> None:
    endpoint.script = [(200, TOKENS), (200, TOKENS), (400, {"error": "invalid_grant"})]
    tokens = await exchange_code(endpoint.metadata, REQUEST, "abc", client_id=CLIENT)
    assert tokens == TokenSet("a.b.c", "at", "rt", 300)
    assert endpoint.forms[0] == {
        "grant_type": "authorization_code",
        "code": "abc",
        "redirect_uri": REQUEST.redirect_uri,
        "code_verifier": REQUEST.code_verifier,
        "client_id": CLIENT,  # a public client names itself
    }
    assert endpoint.auth[0] is None
    await exchange_code(endpoint.metadata, REQUEST, "abc", client_id=CLIENT, client_secret="pw")
    assert "client_id" not in endpoint.forms[1]
    assert endpoint.auth[1] == "Basic " + base64.b64encode(f"{CLIENT}:pw".encode()).decode()
    with pytest.raises(LoginError, match="refused the code: invalid_grant"):
        await exchange_code(endpoint.metadata, REQUEST, "abc", client_id=CLIENT)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, TOKENS, "tokens"),
        (400, {"error": "authorization_pending"}, 5.0),
        (400, {"error": "slow_down"}, 10.0),
        (400, {"error": "expired_token"}, "device code expired"),
        (400, {"error": "access_denied"}, "denied"),
        (400, {"error": "invalid_client", "error_description": "who?"}, "invalid_client (who?)"),
        (200, {"access_token": "at"}, "no id_token"),
    ],
)
def test_device_poll_outcomes(status: int, body: dict[str, Any], outcome: Any) -> None:
    if isinstance(outcome, str) and outcome != "tokens":
        with pytest.raises(LoginError) as caught:
            device_poll_outcome(status, body, 5.0)
        assert outcome in str(caught.value)
        return
    result = device_poll_outcome(status, body, 5.0)
    if outcome == "tokens":
        assert result.tokens is not None and result.tokens.id_token == "a.b.c"
    else:
        assert result.tokens is None and result.interval == outcome


async def test_device_login_polls_until_approved(endpoint: TokenEndpoint) -> None:
    device = await start_device_login(endpoint.metadata, client_id=CLIENT, scopes=["openid"])
    assert device.user_code == "WDJB-MJHT" and device.interval == 2
    assert endpoint.forms[0] == {"scope": "openid", "client_id": CLIENT}
    endpoint.script = [
        (400, {"error": "authorization_pending"}),
        (400, {"error": "slow_down"}),
        (400, {"error": "authorization_pending"}),
        (200, TOKENS),
    ]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    tokens = await poll_device_login(endpoint.metadata, device, client_id=CLIENT, sleep=sleep)
    assert tokens.id_token == "a.b.c"
    assert waits == [2, 2, 7, 7]  # slow_down adds 5 seconds from then on
    polls = endpoint.forms[1:]
    assert (
        all(
            f
            == {
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": "dev-1",
                "client_id": CLIENT,
            }
            for f in polls
        )
        and len(polls) == 4
    )


async def test_device_login_stops_at_expiry_and_denial(endpoint: TokenEndpoint) -> None:
    device = DeviceAuthorization("dev-1", "U", "http://x", expires_in=10, interval=4)
    ticks = Ticks()

    async def sleep(seconds: float) -> None:
        ticks.now += seconds

    endpoint.script = [(400, {"error": "authorization_pending"})] * 2
    with pytest.raises(LoginError, match="expired"):
        await poll_device_login(
            endpoint.metadata, device, client_id=CLIENT, sleep=sleep, monotonic=ticks
        )
    assert len(endpoint.forms) == 2  # at 4 s and 8 s; at 12 s the code had expired
    endpoint.script = [(400, {"error": "expired_token"})]
    with pytest.raises(LoginError, match="expired"):
        await poll_device_login(endpoint.metadata, device, client_id=CLIENT, sleep=sleep)
    endpoint.script = [(403, {"error": "access_denied"})]
    with pytest.raises(LoginError, match="denied"):
        await poll_device_login(endpoint.metadata, device, client_id=CLIENT, sleep=sleep)


async def test_a_provider_without_the_device_grant_says_so() -> None:
    with pytest.raises(LoginError, match="no device authorization endpoint"):
        await start_device_login(METADATA, client_id=CLIENT, scopes=["openid"])


def test_the_examples_commented_oidc_block_is_valid() -> None:
    example = (Path(__file__).resolve().parents[2] / "config" / "tocsin.example.yaml").read_text()
    assert "  # oidc:\n" in example
    uncommented = re.sub(r"^  # (oidc:|  )", r"  \1", example, flags=re.M)
    oidc = parse_config(uncommented, "tocsin.example.yaml").access.oidc
    assert oidc is not None and oidc.group_roles and oidc.admin_groups
