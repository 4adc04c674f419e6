"""``tocsin login``, ``logout``, ``whoami``."""

from __future__ import annotations

import asyncio
import sys
import time
import webbrowser
from typing import Annotated

import jwt
import typer
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

from tocsin_cli.client import ApiClient
from tocsin_cli.context import OutputOpt, note, out, state, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.loopback import LoopbackRedirect
from tocsin_cli.output import Column, OutputFormat, render_data, render_fields
from tocsin_cli.profiles import Credential, Profile, Resolved, Store, normalise_api_url

REFRESH_MARGIN_S = 30.0
BROWSER_LOGIN_TIMEOUT_S = 300.0

USER_FIELDS = [
    Column("id", "id"),
    Column("kind", "kind"),
    Column("name", "user.name"),
    Column("email", "user.email"),
    Column("admin", "admin"),
    Column("team roles", "team_roles"),
    Column("token scope", "scope"),
]


def login(
    ctx: typer.Context,
    token: Annotated[
        str | None,
        typer.Option(help="store this API token (from `POST /api/v1/tokens` or an admin)"),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="the api's URL, saved in the profile")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option(help="OpenID Connect issuer (saved in the profile)")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="OpenID Connect client id of the CLI (saved in the profile)")
    ] = None,
    scopes: Annotated[
        str | None,
        typer.Option(help="OpenID Connect scopes, space-separated (saved in the profile)"),
    ] = None,
    client_secret_env: Annotated[
        str | None,
        typer.Option(
            help="environment variable holding the client's secret, for a provider that "
            "takes confidential clients only (saved in the profile: the name, not the secret)"
        ),
    ] = None,
    browser: Annotated[
        bool | None,
        typer.Option(
            "--browser/--device",
            help="log in with a browser (authorization code + PKCE, a loopback redirect) or "
            "with a code on another device (default: the device flow when the provider offers it)",
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="check the credential with GET /users/me before saving it")
    ] = True,
) -> None:
    """Log in: store an API token (--token), or log in with OpenID Connect's device flow
    when the profile (or --issuer/--client-id) names a provider.

    Example: tocsin login --api-url http://127.0.0.1:8082 --token tocsin_...
    """
    st = state(ctx)
    store = st.store()
    resolved = store.resolve(st.profile, api_url or st.api_url)
    profile = resolved.profile
    if api_url:
        profile.api_url = normalise_api_url(api_url)
    elif st.api_url:
        profile.api_url = resolved.api_url
    if issuer:
        profile.oidc_issuer = issuer.rstrip("/")
    if client_id:
        profile.oidc_client_id = client_id
    if client_secret_env:
        profile.oidc_client_secret_env = client_secret_env
    if scopes:
        profile.oidc_scopes = scopes.split()
    if token is not None:
        token = token.strip()
        if not token:
            raise CliError("--token: empty", Exit.USAGE)
        credential = Credential(token=token)
    elif profile.oidc_issuer and profile.oidc_client_id:
        credential = _oidc_login(profile, browser)
    else:
        raise CliError(
            "nothing to log in with: pass --token TOKEN, or --issuer URL --client-id ID for "
            "OpenID Connect (saved in the profile for the next time)",
            Exit.USAGE,
        )
    if verify:
        with ApiClient(resolved.api_url, credential.token, timeout=st.timeout) as api:
            me = api.get("/users/me")
        who = _name(me)
    else:
        who = "(not checked)"
    store.set_profile(resolved.profile_name, profile)
    store.store_credential(resolved.profile_name, credential)
    note(
        f"logged in to {resolved.api_url} as {who} (profile {resolved.profile_name}; "
        f"token in {store.credentials_path}, mode 0600)"
    )


def _name(me: object) -> str:
    if isinstance(me, dict):
        return str(me.get("id") or me.get("user_id") or me.get("subject_id") or "?")
    return "?"


def _client_secret(profile: Profile) -> str | None:
    if not profile.oidc_client_secret_env:
        return None
    try:
        return read_secret(profile.oidc_client_secret_env)
    except SecretError as exc:
        raise CliError(str(exc), Exit.USAGE) from None


def _oidc_login(profile: Profile, browser: bool | None) -> Credential:
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


def logout(ctx: typer.Context) -> None:
    """Forget the profile's stored token (it stays valid on the server until it expires or
    is revoked: `DELETE /api/v1/tokens/{id}`)."""
    st = state(ctx)
    store = st.store()
    name = st.profile or store.resolve(st.profile, st.api_url).profile_name
    if store.forget_credential(name):
        note(f"logged out of profile {name}")
    else:
        note(f"profile {name} had no stored token")


def whoami(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Who the api takes you for (GET /users/me): your id, name, role and teams."""
    with state(ctx).client() as api:
        me = api.get("/users/me")
    if output is OutputFormat.table:
        out(render_fields(me, USER_FIELDS, width=width()))
    else:
        out(render_data(me, output))
