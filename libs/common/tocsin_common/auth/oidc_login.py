"""Logging a person in with the OpenID Connect provider: the two flows Tocsin's clients use.

- **Authorization code + PKCE** (RFC 6749 §4.1, RFC 7636) for a browser: the console (or
  the CLI with a loopback redirect) sends the person to :attr:`AuthorizationRequest.url`,
  takes the ``code`` from the redirect with :func:`code_from_callback` (which checks the
  ``state``) and trades it with :func:`exchange_code` (which sends the PKCE verifier).
- **Device authorization grant** (RFC 8628) for the CLI on a machine without a browser:
  :func:`start_device_login` gets a user code to show, :func:`poll_device_login` waits until
  the person has approved it elsewhere (``authorization_pending``, ``slow_down``,
  ``expired_token``, ``access_denied``).

Both end with a :class:`TokenSet`; its ``id_token`` is the bearer credential Tocsin's APIs
accept (docs/security.md#oidc). :func:`verified_identity` checks it and the login's nonce.
The helpers that build requests are pure; only the token calls do I/O (aiohttp).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import aiohttp

from tocsin_common.auth.oidc import HTTP_TIMEOUT, OidcError, OidcVerifier, ProviderMetadata
from tocsin_common.config.model import Oidc
from tocsin_common.secrets import read_secret

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_DEVICE_INTERVAL = 5.0  # RFC 8628 §3.2: 5 seconds when the provider names none
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: add 5 seconds on every slow_down

PostForm = Callable[
    [str, Mapping[str, str], tuple[str, str] | None], Awaitable[tuple[int, dict[str, Any]]]
]
Sleep = Callable[[float], Awaitable[None]]


class LoginError(OidcError):
    """A login step failed; ``str()`` says which and why."""


# ---------------------------------------------------------------------------------------------
# PKCE, state and nonce (pure)
# ---------------------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_code_verifier() -> str:
    """A PKCE code verifier: 86 characters from the unreserved set (RFC 7636 §4.1: 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: BASE64URL(SHA256(verifier)) (RFC 7636 §4.2)."""
    if not 43 <= len(verifier) <= 128:
        raise ValueError(f"a PKCE code verifier has 43 to 128 characters, not {len(verifier)}")
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def new_state() -> str:
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the person, and what the callback must match (keep it for the code
    exchange: ``state`` against CSRF, ``nonce`` against token replay, ``code_verifier``)."""

    url: str
    redirect_uri: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(
    metadata: ProviderMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    state: str | None = None,
    nonce: str | None = None,
    code_verifier: str | None = None,
) -> AuthorizationRequest:
    """The authorization URL of a code + PKCE (S256) login (pure but for fresh randomness)."""
    methods = metadata.code_challenge_methods_supported
    if methods and "S256" not in methods:
        raise LoginError(
            f"the provider does not support PKCE with S256 (it lists {', '.join(methods)})"
        )
    state = state or new_state()
    nonce = nonce or new_nonce()
    code_verifier = code_verifier or new_code_verifier()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge(code_verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
    url = f"{metadata.authorization_endpoint}{separator}{urlencode(query)}"
    return AuthorizationRequest(url, redirect_uri, state, nonce, code_verifier)


def code_from_callback(request: AuthorizationRequest, callback_url: str) -> str:
    """The authorization code in the redirect to ``request.redirect_uri``; LoginError when
    the provider answered an error, or the state is not this login's."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
    if params.get("state") != request.state:
        raise LoginError("the callback's state is not this login's (a forged or stale redirect)")
    if "error" in params:
        detail = params.get("error_description", "")
        suffix = f" ({detail})" if detail else ""
        raise LoginError(f"the provider refused the login: {params['error']}{suffix}")
    code = params.get("code", "")
    if not code:
        raise LoginError("the callback carries no code")
    return code


# ---------------------------------------------------------------------------------------------
# Token endpoint
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint answered. ``id_token`` is the credential for Tocsin."""

    id_token: str
    access_token: str
    refresh_token: str = ""
    expires_in: int = 0
    scope: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> TokenSet:
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise LoginError(
                "the provider answered no id_token: does the login ask for the 'openid' scope?"
            )
        expires_in = body.get("expires_in", 0)
        return cls(
            id_token=id_token,
            access_token=str(body.get("access_token", "")),
            refresh_token=str(body.get("refresh_token", "")),
            expires_in=int(expires_in) if isinstance(expires_in, int | float | str) else 0,
            scope=str(body.get("scope", "")),
        )


async def post_form(
    url: str, data: Mapping[str, str], basic_auth: tuple[str, str] | None
) -> tuple[int, dict[str, Any]]:
    """POST ``data`` form-encoded; (status, the JSON object answered). LoginError when the
    provider cannot be reached or answers no JSON object."""
    headers = {"Accept": "application/json"}
    if basic_auth:
        # RFC 6749 §2.3.1: id and secret are form-encoded, then joined and base64-encoded.
        pair = ":".join(quote_plus(part) for part in basic_auth)
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    try:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.post(url, data=dict(data), headers=headers) as response,
        ):
            body = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise LoginError(f"POST {url} failed: {e or type(e).__name__}") from e
    if not isinstance(body, dict):
        raise LoginError(f"POST {url} did not answer a JSON object (status {status})")
    return status, body


def _client_auth(
    client_id: str, client_secret: str | None, form: dict[str, str]
) -> tuple[str, str] | None:
    """A confidential client authenticates with HTTP Basic (client_secret_basic); a public
    one names itself in the form."""
    if client_secret:
        return (client_id, client_secret)
    form["client_id"] = client_id
    return None


def _error(body: Mapping[str, Any], status: int) -> str:
    error = str(body.get("error", f"status {status}"))
    detail = body.get("error_description")
    return f"{error} ({detail})" if detail else error


async def exchange_code(
    metadata: ProviderMetadata,
    request: AuthorizationRequest,
    code: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    post: PostForm = post_form,
) -> TokenSet:
    """Trade the authorization ``code`` for tokens, proving the login with its verifier."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "code_verifier": request.code_verifier,
    }
    status, body = await post(
        metadata.token_endpoint, form, _client_auth(client_id, client_secret, form)
    )
    if status != 200:
        raise LoginError(f"the provider refused the code: {_error(body, status)}")
    return TokenSet.parse(body)


async def refresh_tokens(
    metadata: ProviderMetadata,
    refresh_token: str,
    *,
    client_id: str,
    client_secret: str | None = None,
    post: PostForm = post_form,
) -> TokenSet:
    """New tokens for a refresh token (the CLI renews its ID token without a new login)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    status, body = await post(
        metadata.token_endpoint, form, _client_auth(client_id, client_secret, form)
    )
    if status != 200:
        raise LoginError(f"the provider refused the refresh token: {_error(body, status)}")
    return TokenSet.parse(body)


# ---------------------------------------------------------------------------------------------
# Device authorization grant (RFC 8628)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceAuthorization:
    """What to show the person (``user_code`` at ``verification_uri``) and poll with."""

    device_code: str
    user_code: str
    verification_uri: str
    expires_in: float
    interval: float = DEFAULT_DEVICE_INTERVAL
    verification_uri_complete: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> DeviceAuthorization:
        missing = [
            name
            for name in ("device_code", "user_code", "verification_uri", "expires_in")
            if not body.get(name)
        ]
        if missing:
            raise LoginError(
                f"the device authorization response has no {', '.join(missing)} (RFC 8628 §3.2)"
            )
        return cls(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            expires_in=float(body["expires_in"]),
            interval=float(body.get("interval") or DEFAULT_DEVICE_INTERVAL),
            verification_uri_complete=str(body.get("verification_uri_complete", "")),
        )


async def start_device_login(
    metadata: ProviderMetadata,
    *,
    client_id: str,
    scopes: Iterable[str],
    client_secret: str | None = None,
    post: PostForm = post_form,
) -> DeviceAuthorization:
    """Ask the provider for a device code and a user code to show (RFC 8628 §3.1)."""
    if not metadata.device_authorization_endpoint:
        raise LoginError(
            "the provider offers no device authorization endpoint: log in with a browser"
        )
    form = {"scope": " ".join(scopes)}
    status, body = await post(
        metadata.device_authorization_endpoint,
        form,
        _client_auth(client_id, client_secret, form),
    )
    if status != 200:
        raise LoginError(f"the provider refused a device login: {_error(body, status)}")
    return DeviceAuthorization.parse(body)


@dataclass(frozen=True)
class PollOutcome:
    """One answer of the token endpoint to a device poll: the tokens, or how long to wait
    before the next poll."""

    tokens: TokenSet | None
    interval: float


def device_poll_outcome(status: int, body: Mapping[str, Any], interval: float) -> PollOutcome:
    """What a poll's answer means (RFC 8628 §3.5), pure: tokens; wait ``interval`` again
    (authorization_pending); wait 5 seconds longer from now on (slow_down); or LoginError
    (expired_token, access_denied, anything else)."""
    if status == 200:
        return PollOutcome(TokenSet.parse(body), interval)
    error = body.get("error")
    if error == "authorization_pending":
        return PollOutcome(None, interval)
    if error == "slow_down":
        return PollOutcome(None, interval + SLOW_DOWN_STEP)
    if error == "expired_token":
        raise LoginError("the device code expired before the login was approved; start again")
    if error == "access_denied":
        raise LoginError("the login was denied")
    raise LoginError(f"the provider refused the device login: {_error(body, status)}")


async def poll_device_login(
    metadata: ProviderMetadata,
    device: DeviceAuthorization,
    *,
    client_id: str,
    client_secret: str | None = None,
    post: PostForm = post_form,
    sleep: Sleep = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> TokenSet:
    """Poll the token endpoint every ``device.interval`` seconds (longer after slow_down)
    until the person approves or denies the login, or the device code expires."""
    deadline = monotonic() + device.expires_in
    interval = device.interval
    while True:
        await sleep(interval)
        if monotonic() >= deadline:
            raise LoginError("the device code expired before the login was approved; start again")
        form = {"grant_type": DEVICE_GRANT, "device_code": device.device_code}
        status, body = await post(
            metadata.token_endpoint, form, _client_auth(client_id, client_secret, form)
        )
        outcome = device_poll_outcome(status, body, interval)
        if outcome.tokens is not None:
            return outcome.tokens
        interval = outcome.interval


# ---------------------------------------------------------------------------------------------
# After the login
# ---------------------------------------------------------------------------------------------


async def verified_identity(
    verifier: OidcVerifier, tokens: TokenSet, nonce: str | None = None
) -> dict[str, Any]:
    """The claims of the login's ID token, checked as the services check it, and its nonce
    against the one the authorization request sent (None: a device login has none)."""
    return await verifier.verify(tokens.id_token, nonce=nonce)


def client_secret(settings: Oidc) -> str | None:
    """The confidential client's secret from ``client_secret_env`` (or ``<NAME>_FILE``);
    None for a public client (the CLI)."""
    if settings.client_secret_env is None:
        return None
    return read_secret(settings.client_secret_env)
