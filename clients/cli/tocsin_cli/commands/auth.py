"""``tocsin login``, ``logout``, ``whoami``."""

from __future__ import annotations

from typing import Annotated

import typer

from tocsin_cli.client import ApiClient
from tocsin_cli.context import OutputOpt, note, out, state, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.output import Column, OutputFormat, render_data, render_fields
from tocsin_cli.profiles import Credential, normalise_api_url

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
        from tocsin_cli.oidc import oidc_login

        credential = oidc_login(profile, browser)
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
