"""Secrets a process reads at start: from an environment variable or a file it names.

A secret named ``NAME`` is read from ``$NAME``, or from the file at ``$NAME_FILE`` (the
Kubernetes/compose way: a mounted Secret). Tocsin never invents a secret for itself and
never keeps one in Redis: `make up` and the test harness generate theirs under `.run/`,
deployments bring their own. A value copied from an example (``change-me``...) or too short
to resist guessing is refused at start, naming the variable, so a deployment cannot run on
a secret that is published in this repository.
"""

from __future__ import annotations

import os
import secrets as _random
from collections.abc import Mapping
from pathlib import Path

MIN_SECRET_BYTES = 32

# Values that appear in docs, examples and other projects' quick-starts. Compared after
# lower-casing and dropping '-', '_' and spaces.
_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "changemeplease",
        "secret",
        "password",
        "devsecret",
        "dev",
        "test",
        "testsecret",
        "example",
        "examplesecret",
        "tocsin",
        "tocsinsecret",
        "insecure",
        "default",
        "replaceme",
        "xxxxxxxx",
    }
)


# A value containing one of these was copied from an example, whatever else it says.
_PLACEHOLDER_MARKS = ("changeme", "replaceme", "devonly", "placeholder", "example")


class SecretError(ValueError):
    """A required secret is missing, unreadable, a known placeholder or too short."""


def _normalized(value: str) -> str:
    return value.lower().replace("-", "").replace("_", "").replace(" ", "")


def check_secret(name: str, value: str, min_bytes: int = MIN_SECRET_BYTES) -> str:
    """``value`` if it can be used as the secret ``name``; SecretError naming it if not."""
    if not value:
        raise SecretError(f"{name}: required, and empty")
    normalized = _normalized(value)
    if normalized in _PLACEHOLDERS or any(m in normalized for m in _PLACEHOLDER_MARKS):
        raise SecretError(f"{name}: a known placeholder value; generate a random secret")
    if len(value.encode()) < min_bytes:
        raise SecretError(
            f"{name}: {len(value.encode())} bytes; at least {min_bytes} are required "
            f"(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def read_secret(
    name: str,
    env: Mapping[str, str] | None = None,
    *,
    required: bool = True,
    min_bytes: int = MIN_SECRET_BYTES,
) -> str | None:
    """The secret ``name`` from ``$name`` or the file at ``$name_FILE``.

    Missing: SecretError when ``required``, else None. Both set: SecretError (which one is
    meant would be a guess). Trailing newlines of a file are dropped.
    """
    env = os.environ if env is None else env
    direct = env.get(name, "")
    file_name = env.get(f"{name}_FILE", "")
    if direct and file_name:
        raise SecretError(f"{name} and {name}_FILE are both set; set one")
    if file_name:
        try:
            value = Path(file_name).read_text().rstrip("\r\n")
        except OSError as e:
            raise SecretError(f"{name}_FILE={file_name}: cannot be read ({e.strerror})") from None
        return check_secret(f"{name}_FILE={file_name}", value, min_bytes)
    if direct:
        return check_secret(name, direct, min_bytes)
    if required:
        raise SecretError(f"{name}: required (set {name} or {name}_FILE)")
    return None


def generate_secret() -> str:
    """A fresh random secret, as `make up` and the test harness write under `.run/`."""
    return _random.token_urlsafe(MIN_SECRET_BYTES)
