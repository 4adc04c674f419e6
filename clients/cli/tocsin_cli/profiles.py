"""Where ``tocsin`` keeps its settings and credentials, and which ones a command uses.

- ``$XDG_CONFIG_HOME/tocsin/config.yaml`` (``~/.config/tocsin/config.yaml`` by default):
  named profiles, each with the api's URL (and an OpenID Connect issuer and client id for
  ``tocsin login`` without ``--token``), and which profile is current.
- ``$XDG_CONFIG_HOME/tocsin/credentials.yaml``: each profile's token, written with mode 0600
  in a 0700 directory. Like ssh with a private key, ``tocsin`` refuses to read it when any
  other user may read or write it, or another user owns it: a token others can read is a
  token others can use.
- ``TOCSIN_API_URL``, ``TOCSIN_TOKEN`` and ``TOCSIN_PROFILE`` override the files (CI jobs
  and scripts need no file); ``--api-url`` and ``--profile`` override those.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tocsin_common.settings import DEFAULT_PORTS

from tocsin_cli.exitcodes import CliError, Exit

DEFAULT_PROFILE = "default"
DEFAULT_API_URL = f"http://127.0.0.1:{DEFAULT_PORTS['api'].http}"  # make up's api
API_PREFIX = "/api/v1"


def config_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/tocsin``, or ``~/.config/tocsin`` (XDG Base Directory spec: a
    relative XDG_CONFIG_HOME is invalid and ignored)."""
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "tocsin"


@dataclass
class Profile:
    api_url: str = DEFAULT_API_URL
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # The name of an environment variable (or NAME_FILE) with the client's secret, for a
    # provider that registers the CLI as a confidential client; never the secret itself.
    oidc_client_secret_env: str | None = None
    oidc_scopes: list[str] = field(default_factory=lambda: ["openid", "profile", "email", "groups"])


@dataclass
class ConfigFile:
    current: str = DEFAULT_PROFILE
    profiles: dict[str, Profile] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        return self.profiles.get(name) or Profile()


@dataclass
class Credential:
    """A profile's bearer credential: an API token (``kind: token``) or an OpenID Connect
    ID token with what renews it (``kind: oidc``)."""

    token: str
    kind: str = "token"
    refresh_token: str | None = None
    expires_at: float | None = None  # Unix time the ID token expires


def normalise_api_url(url: str) -> str:
    """The api's base URL without a trailing slash or ``/api/v1`` (either may be given)."""
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest:
        raise CliError(f"api URL {url!r}: expected http://HOST:PORT or https://HOST", Exit.USAGE)
    return url


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: cannot read: {exc}", Exit.USAGE) from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping at the top level", Exit.USAGE)
    return data


def load_config_file(path: Path) -> ConfigFile:
    data = _load_yaml(path)
    profiles: dict[str, Profile] = {}
    raw_profiles = data.get("profiles") or {}
    if not isinstance(raw_profiles, dict):
        raise CliError(f"{path}: profiles: expected a mapping of name to profile", Exit.USAGE)
    for name, raw in raw_profiles.items():
        if not isinstance(raw, dict):
            raise CliError(f"{path}: profiles.{name}: expected a mapping", Exit.USAGE)
        known = set(Profile.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CliError(
                f"{path}: profiles.{name}.{unknown[0]}: unknown field "
                f"(known: {', '.join(sorted(known))})",
                Exit.USAGE,
            )
        profiles[str(name)] = Profile(**raw)
    return ConfigFile(
        current=str(data.get("current_profile") or DEFAULT_PROFILE), profiles=profiles
    )


def save_config_file(path: Path, config: ConfigFile) -> None:
    data = {
        "current_profile": config.current,
        "profiles": {
            name: {k: v for k, v in asdict(p).items() if v is not None}
            for name, p in config.profiles.items()
        },
    }
    _write_private(path, yaml.safe_dump(data, sort_keys=False))


def check_private(st: os.stat_result, path: Path, uid: int) -> None:
    """Refuse a credentials file that another user owns, or that group or others may read
    or write (mode bits 077), as ssh refuses such a private key."""
    if st.st_uid != uid:
        raise CliError(
            f"{path} is owned by uid {st.st_uid}, not you (uid {uid}): refusing to use its "
            "tokens; remove it and log in again",
            Exit.AUTH,
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CliError(
            f"permissions {mode:04o} for {path} are too open: other users could read your "
            f"token. Run: chmod 600 {path}",
            Exit.AUTH,
        )


def load_credentials(path: Path) -> dict[str, Credential]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    check_private(st, path, os.getuid())
    data = _load_yaml(path)
    out: dict[str, Credential] = {}
    for name, raw in data.items():
        if isinstance(raw, dict) and isinstance(raw.get("token"), str):
            out[str(name)] = Credential(
                **{k: v for k, v in raw.items() if k in Credential.__dataclass_fields__}
            )
    return out


def save_credentials(path: Path, credentials: Mapping[str, Credential]) -> None:
    data = {
        name: {k: v for k, v in asdict(c).items() if v is not None}
        for name, c in credentials.items()
    }
    _write_private(path, yaml.safe_dump(data, sort_keys=False))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600, in a 0700 directory: the file never
    exists with wider permissions, not even for a moment."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Resolved:
    """What a command uses: the profile's name and settings, the api URL and the token
    (None when there is none), and where each came from."""

    profile_name: str
    profile: Profile
    api_url: str
    credential: Credential | None
    token_source: str


class Store:
    """The two files of one user (under ``config_dir(env)``)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.dir = config_dir(env)
        self.config_path = self.dir / "config.yaml"
        self.credentials_path = self.dir / "credentials.yaml"

    def resolve(self, profile: str | None = None, api_url: str | None = None) -> Resolved:
        config = load_config_file(self.config_path)
        name = profile or self.env.get("TOCSIN_PROFILE") or config.current
        settings = config.profile(name)
        url = api_url or self.env.get("TOCSIN_API_URL") or settings.api_url
        env_token = self.env.get("TOCSIN_TOKEN", "").strip()
        if env_token:
            return Resolved(
                name, settings, normalise_api_url(url), Credential(env_token), "TOCSIN_TOKEN"
            )
        credential = load_credentials(self.credentials_path).get(name)
        return Resolved(
            name, settings, normalise_api_url(url), credential, str(self.credentials_path)
        )

    def set_profile(self, name: str, profile: Profile, make_current: bool = True) -> None:
        config = load_config_file(self.config_path)
        config.profiles[name] = profile
        if make_current:
            config.current = name
        save_config_file(self.config_path, config)

    def store_credential(self, name: str, credential: Credential) -> None:
        credentials = load_credentials(self.credentials_path)
        credentials[name] = credential
        save_credentials(self.credentials_path, credentials)

    def forget_credential(self, name: str) -> bool:
        credentials = load_credentials(self.credentials_path)
        if credentials.pop(name, None) is None:
            return False
        save_credentials(self.credentials_path, credentials)
        return True
