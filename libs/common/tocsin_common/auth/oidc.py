"""OpenID Connect tokens as credentials: discovery, the provider's keys, token checks, and
the mapping of a token's claims to a principal (docs/security.md#oidc).

A person logs in with the identity provider (:mod:`tocsin_common.auth.oidc_login`) and
sends the ID token it issued as their bearer credential. :class:`OidcVerifier` checks it:
the signature against the provider's published keys (JWKS, fetched with aiohttp and
cached; fetched again when a token names a key it does not know, at most once per
``jwks_refresh_interval``), the issuer, the audience, the expiry and not-before times (with
``leeway`` for clock skew) and the required claims. :func:`principal_from_claims` is pure:
the username claim names a configured user, the groups claim adds roles on teams
(``group_roles``) and the admin role (``admin_groups``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from tocsin_common.auth.directory import team_roles_of
from tocsin_common.auth.policy import Principal, PrincipalKind, Role
from tocsin_common.config.model import Oidc, TocsinConfig

DISCOVERY_PATH = "/.well-known/openid-configuration"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
# After a failed discovery or key fetch, calls fail fast for this long instead of each one
# asking the provider again (a burst of calls must not become a burst of fetches).
RETRY_AFTER_FAILURE = 5.0
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub")

_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

FetchJson = Callable[[str], Awaitable[Mapping[str, Any]]]


class OidcError(Exception):
    """A token, a provider answer or a login step was refused; ``str()`` is the reason."""


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated base64url parts: a JWT (never an API token nor a service
    credential, which have no such shape)."""
    return bool(_JWT_RE.match(credential))


@dataclass(frozen=True)
class ProviderMetadata:
    """What discovery says about the provider (the fields Tocsin uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str = ""
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    code_challenge_methods_supported: tuple[str, ...] = ()

    @classmethod
    def parse(cls, issuer: str, document: Mapping[str, Any]) -> ProviderMetadata:
        """The metadata in a discovery ``document`` of ``issuer`` (OpenID Connect Discovery
        §4.3: its ``issuer`` must be exactly the one asked for)."""
        found = str(document.get("issuer", "")).rstrip("/")
        if found != issuer.rstrip("/"):
            raise OidcError(
                f"the provider's discovery document names issuer {found!r}, not {issuer!r}; "
                "set access.oidc.issuer to the provider's exact issuer URL"
            )
        missing = [
            name
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if not isinstance(document.get(name), str) or not document.get(name)
        ]
        if missing:
            raise OidcError(f"the provider's discovery document has no {', '.join(missing)}")
        methods = document.get("code_challenge_methods_supported") or ()
        return cls(
            issuer=issuer.rstrip("/"),
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            device_authorization_endpoint=str(document.get("device_authorization_endpoint", "")),
            userinfo_endpoint=str(document.get("userinfo_endpoint", "")),
            end_session_endpoint=str(document.get("end_session_endpoint", "")),
            code_challenge_methods_supported=tuple(str(m) for m in methods),
        )


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + DISCOVERY_PATH


async def fetch_json(url: str) -> Mapping[str, Any]:
    """GET ``url`` as JSON (an object), with a timeout; OidcError on any failure."""
    try:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise OidcError(f"GET {url} answered {response.status}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise OidcError(f"GET {url} failed: {e or type(e).__name__}") from e
    if not isinstance(body, dict):
        raise OidcError(f"GET {url} did not answer a JSON object")
    return body


async def discover(issuer: str, fetch: FetchJson = fetch_json) -> ProviderMetadata:
    """The provider's metadata, from ``<issuer>/.well-known/openid-configuration``."""
    return ProviderMetadata.parse(issuer, await fetch(discovery_url(issuer)))


class OidcVerifier:
    """Checks tokens of one provider (one ``access.oidc`` setting). Use it from one event
    loop; it fetches discovery and keys lazily, without blocking the loop."""

    def __init__(
        self,
        settings: Oidc,
        *,
        fetch: FetchJson = fetch_json,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._fetch = fetch
        self._monotonic = monotonic
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at: float | None = None
        self._failed_until = 0.0
        self._failure = ""
        self._lock: asyncio.Lock | None = None

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:  # created on the loop that serves the calls
            self._lock = asyncio.Lock()
        return self._lock

    def _fail_fast(self) -> None:
        if self._monotonic() < self._failed_until:
            raise OidcError(self._failure)

    def _remember_failure(self, error: OidcError) -> None:
        self._failure = f"the identity provider is unavailable: {error}"
        self._failed_until = self._monotonic() + RETRY_AFTER_FAILURE

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            async with self._locked():
                if self._metadata is None:
                    self._fail_fast()
                    try:
                        self._metadata = await discover(self.settings.issuer, self._fetch)
                    except OidcError as e:
                        self._remember_failure(e)
                        raise OidcError(self._failure) from e
        return self._metadata

    async def _refresh_keys(self, metadata: ProviderMetadata) -> None:
        self._fail_fast()
        try:
            document = await self._fetch(metadata.jwks_uri)
        except OidcError as e:
            self._remember_failure(e)
            raise OidcError(self._failure) from e
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys") or ():
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type this build cannot use; others may still do
            keys[str(entry.get("kid", ""))] = key
        self._keys = keys
        self._keys_fetched_at = self._monotonic()

    def _cached_key(self, kid: str) -> jwt.PyJWK | None:
        if kid in self._keys:
            return self._keys[kid]
        if not kid and len(self._keys) == 1:  # a provider with one key may omit the kid
            return next(iter(self._keys.values()))
        return None

    async def _key(self, kid: str) -> jwt.PyJWK:
        """The provider's key ``kid``; the key set is fetched again for an unknown kid (a
        rotation), at most once per ``jwks_refresh_interval``."""
        key = self._cached_key(kid)
        if key is not None:
            return key
        metadata = await self.metadata()  # takes the lock itself: not reentrant
        async with self._locked():
            if self._cached_key(kid) is None:
                interval = self.settings.jwks_refresh_interval.total_seconds()
                stale = (
                    self._keys_fetched_at is None
                    or self._monotonic() - self._keys_fetched_at >= interval
                )
                if stale:
                    await self._refresh_keys(metadata)
        key = self._cached_key(kid)
        if key is None:
            raise OidcError(
                f"the token is signed with key {kid!r}, which the provider does not list"
            )
        return key

    async def verify(self, token: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The claims of ``token`` once its signature and claims check out; OidcError with
        the reason otherwise. ``nonce``: the value the login sent (ID tokens of a login)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise OidcError(f"not a valid JWT: {e}") from e
        alg = str(header.get("alg", ""))
        if alg not in self.settings.algorithms:
            raise OidcError(
                f"the token's algorithm {alg!r} is not accepted "
                f"(access.oidc.algorithms: {', '.join(self.settings.algorithms)})"
            )
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.settings.expected_audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as e:
            raise OidcError("the token has expired; log in again") from e
        except jwt.ImmatureSignatureError as e:
            raise OidcError("the token is not valid yet (nbf or iat in the future)") from e
        except jwt.InvalidAudienceError as e:
            raise OidcError(
                f"the token is not meant for Tocsin (aud must include "
                f"{self.settings.expected_audience!r})"
            ) from e
        except jwt.InvalidIssuerError as e:
            raise OidcError(f"the token's issuer is not {self.settings.issuer!r}") from e
        except jwt.MissingRequiredClaimError as e:
            raise OidcError(f"the token has no {e.claim!r} claim") from e
        except jwt.InvalidSignatureError as e:
            raise OidcError("the token's signature does not verify") from e
        except jwt.PyJWTError as e:
            raise OidcError(f"invalid token: {e}") from e
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is not None and azp != self.settings.client_id:
            raise OidcError(f"the token was issued to client {azp!r}, not to Tocsin's")
        if nonce is not None and claims.get("nonce") != nonce:
            raise OidcError("the ID token's nonce is not the one this login sent")
        return claims


# ---------------------------------------------------------------------------------------------
# Claims -> principal (pure)
# ---------------------------------------------------------------------------------------------


def user_for(config: TocsinConfig, value: str) -> str:
    """The configured user ``value`` names: the user with that id, else the one user with
    that email (case-insensitive). OidcError when none or several match."""
    if any(u.id == value for u in config.users):
        return value
    by_email = [u.id for u in config.users if u.email.casefold() == value.casefold()]
    if len(by_email) == 1:
        return by_email[0]
    if by_email:
        raise OidcError(
            f"{value!r} is the email of several users ({', '.join(by_email)}); "
            "give each user their own email"
        )
    raise OidcError(f"{value!r} is no user of this configuration (by id or email)")


def groups_of(claims: Mapping[str, Any], groups_claim: str) -> frozenset[str]:
    """The groups claim as a set (absent: none; one string: that group)."""
    groups = claims.get(groups_claim)
    if groups is None:
        return frozenset()
    if isinstance(groups, str):
        return frozenset({groups})
    if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
        return frozenset(groups)
    raise OidcError(f"the token's {groups_claim!r} claim is not a list of group names")


def principal_from_claims(
    config: TocsinConfig, settings: Oidc, claims: Mapping[str, Any]
) -> Principal:
    """The user a verified token stands for: the configured user its ``username_claim``
    names, with their configured team roles joined with those their groups grant (the best
    role per team), and admin when configured so or in an admin group."""
    value = claims.get(settings.username_claim)
    if not isinstance(value, str) or not value:
        raise OidcError(
            f"the token has no {settings.username_claim!r} claim "
            "(access.oidc.username_claim); ask the provider to include it"
        )
    if settings.username_claim == "email" and claims.get("email_verified") is False:
        raise OidcError(f"the provider has not verified the email {value!r}")
    user_id = user_for(config, value)
    groups = groups_of(claims, settings.groups_claim)
    roles = dict(team_roles_of(config, user_id))
    for grant in settings.group_roles:
        if grant.group in groups:
            role = Role.parse(grant.role)
            roles[grant.team] = max(roles.get(grant.team, Role.NONE), role)
    admin = user_id in config.access.admins or bool(groups & set(settings.admin_groups))
    return Principal(user_id, PrincipalKind.USER, team_roles=roles, admin=admin)


class OidcAuthenticator:
    """Bearer JWT -> principal under the current config; the verifier is rebuilt when
    ``access.oidc`` changes with a reload (its key cache goes with it)."""

    def __init__(self, fetch: FetchJson = fetch_json) -> None:
        self._fetch = fetch
        self._verifier: OidcVerifier | None = None

    def verifier(self, settings: Oidc) -> OidcVerifier:
        if self._verifier is None or self._verifier.settings != settings:
            self._verifier = OidcVerifier(settings, fetch=self._fetch)
        return self._verifier

    async def authenticate(self, config: TocsinConfig, token: str) -> Principal:
        settings = config.access.oidc
        if settings is None:
            raise OidcError("a JWT, but access.oidc is not configured: use an API token")
        claims = await self.verifier(settings).verify(token)
        return principal_from_claims(config, settings, claims)
