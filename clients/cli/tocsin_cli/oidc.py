"""OpenID Connect logins of ``tocsin login`` (device flow, or a browser with a loopback
redirect) and the renewal of a stored ID token. Imported only when used: the provider
helpers (aiohttp, jwt, the config model) would slow every other command's start."""

from __future__ import annotations

import asyncio
import sys
import time
import webbrowser

import jwt
from tocsin_common.auth.oidc import OidcError, discover
from tocsin_common.auth.oidc_login import (
    LoginError,
    TokenSet,
    authorization_request,
    code_from_callback,
    exchange_code,
    poll_device_login,
    refresh_tokens,
    start_device_login,
)
from tocsin_common.secrets import SecretError, read_secret

from tocsin_cli.context import note
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.loopback import LoopbackRedirect
from tocsin_cli.profiles import Credential, Profile, Resolved, Store

REFRESH_MARGIN_S = 30.0
BROWSER_LOGIN_TIMEOUT_S = 300.0


def _client_secret(profile: Profile) -> str | None:
    if not profile.oidc_client_secret_env:
        return None
    try:
        return read_secret(profile.oidc_client_secret_env)
    except SecretError as exc:
        raise CliError(str(exc), Exit.USAGE) from None


def oidc_login(profile: Profile, browser: bool | None) -> Credential:
    """Log in with the profile's provider: the device flow (a code to enter on any device)
    when it offers one and ``browser`` is not True, else a browser login."""
    issuer = profile.oidc_issuer or ""
    client_id = profile.oidc_client_id or ""
    secret = _client_secret(profile)

    async def run() -> TokenSet:
        metadata = await discover(issuer)
        use_browser = browser if browser is not None else not metadata.device_authorization_endpoint
        if not use_browser:
            device = await start_device_login(
                metadata, client_id=client_id, scopes=profile.oidc_scopes, client_secret=secret
            )
            where = device.verification_uri_complete or device.verification_uri
            note(f"To log in, open {where} and enter the code {device.user_code}")
            return await poll_device_login(
                metadata, device, client_id=client_id, client_secret=secret
            )
        redirect = LoopbackRedirect()
        try:
            request = authorization_request(
                metadata,
                client_id=client_id,
                redirect_uri=redirect.redirect_uri,
                scopes=profile.oidc_scopes,
            )
            note(f"To log in, open this URL in a browser on this machine: {request.url}")
            if sys.stderr.isatty():
                webbrowser.open(request.url)
            callback = await asyncio.to_thread(redirect.wait, BROWSER_LOGIN_TIMEOUT_S)
        finally:
            redirect.close()
        if callback is None:
            raise LoginError(f"no login within {BROWSER_LOGIN_TIMEOUT_S:.0f} s")
        code = code_from_callback(request, callback)
        tokens = await exchange_code(
            metadata, request, code, client_id=client_id, client_secret=secret
        )
        # The nonce this login sent must be the ID token's: no replayed token.
        claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
        if claims.get("nonce") != request.nonce:
            raise LoginError("the ID token does not carry this login's nonce")
        return tokens

    try:
        tokens = asyncio.run(run())
    except OidcError as exc:
        raise CliError(f"OpenID Connect login failed: {exc}", Exit.AUTH) from None
    return _credential(tokens)


def _credential(tokens: TokenSet) -> Credential:
    return Credential(
        token=tokens.id_token,
        kind="oidc",
        refresh_token=tokens.refresh_token or None,
        expires_at=time.time() + tokens.expires_in if tokens.expires_in else None,
    )


def fresh_oidc_token(store: Store, resolved: Resolved) -> str:
    """The profile's ID token, renewed with its refresh token when it is about to expire."""
    credential = resolved.credential
    assert credential is not None
    profile = resolved.profile
    expiring = (
        credential.expires_at is not None and credential.expires_at - time.time() < REFRESH_MARGIN_S
    )
    if (
        not expiring
        or not credential.refresh_token
        or not profile.oidc_issuer
        or not profile.oidc_client_id
    ):
        return credential.token
    refresh_token = credential.refresh_token

    async def run() -> TokenSet:
        metadata = await discover(profile.oidc_issuer or "")
        return await refresh_tokens(
            metadata,
            refresh_token,
            client_id=profile.oidc_client_id or "",
            client_secret=_client_secret(profile),
        )

    try:
        renewed = _credential(asyncio.run(run()))
    except OidcError as exc:
        if credential.expires_at is not None and credential.expires_at > time.time():
            # Not expired yet: use it while it lasts (a provider may answer a refresh with
            # no new ID token; OpenID Connect Core §12.2 allows it).
            note(f"could not renew the login ({exc}); using the current token until it expires")
            return credential.token
        raise CliError(
            f"the login expired and could not be renewed ({exc}): run `tocsin login`", Exit.AUTH
        ) from None
    if not renewed.refresh_token:
        renewed.refresh_token = refresh_token
    store.store_credential(resolved.profile_name, renewed)
    return renewed.token
