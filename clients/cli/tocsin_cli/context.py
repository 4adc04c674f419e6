"""What every command shares: the global options, the api client, printing."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer

from tocsin_cli.client import ApiClient
from tocsin_cli.output import OutputFormat
from tocsin_cli.profiles import Resolved, Store

OutputOpt = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table for people; json or yaml for scripts"),
]


@dataclass
class State:
    profile: str | None = None
    api_url: str | None = None
    timeout: float = 15.0

    def store(self) -> Store:
        return Store(os.environ)

    def resolved(self) -> Resolved:
        return self.store().resolve(self.profile, self.api_url)

    def client(self) -> ApiClient:
        resolved = self.resolved()
        token = resolved.credential.token if resolved.credential else None
        if resolved.credential and resolved.credential.kind == "oidc":
            from tocsin_cli.oidc import fresh_oidc_token

            token = fresh_oidc_token(self.store(), resolved)
        return ApiClient(resolved.api_url, token, timeout=self.timeout)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def width() -> int:
    """The terminal's width; into a pipe or a file, lines as long as the table needs (a
    script greps whole lines, nothing is folded)."""
    if not sys.stdout.isatty():
        return UNBOUNDED_WIDTH
    return shutil.get_terminal_size((120, 24)).columns


UNBOUNDED_WIDTH = 10_000


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def note(text: str) -> None:
    """A message for the person, on stderr (stdout stays parseable), unwrapped."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def now() -> datetime:
    return datetime.now(UTC)
