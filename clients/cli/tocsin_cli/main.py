"""The ``tocsin`` command: the app, its global options, and how failures end it (one line
on stderr, the documented exit code; docs/cli.md)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tocsin_cli.commands import (
    auth,
    automation,
    incidents,
    live,
    ops,
    people,
    silence,
    subscribers,
)
from tocsin_cli.context import State, note
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.parsing import ArgError

app = typer.Typer(
    name="tocsin",
    help="Work Tocsin's incidents, on-call, schedules and silences from a terminal "
    "(docs/cli.md). Exit codes: 0 ok, 1 error, 2 usage, 3 auth, 4 not found, 5 conflict, "
    "6 unreachable, 7 rate limited.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", help="profile in the config file (TOCSIN_PROFILE)"),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="the api's URL (TOCSIN_API_URL; else the profile's)"),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for the api")] = 15.0,
) -> None:
    ctx.obj = State(profile=profile, api_url=api_url, timeout=timeout)


app.command()(auth.login)
app.command()(auth.logout)
app.command()(auth.whoami)
app.add_typer(incidents.app, name="incidents")
app.add_typer(automation.app, name="automation")
app.command()(people.oncall)
app.add_typer(people.schedule_app, name="schedule")
app.add_typer(silence.app, name="silence")
app.add_typer(subscribers.app, name="subscribers")
app.command()(live.tail)
app.command()(live.report)
app.add_typer(ops.config_app, name="config")
app.add_typer(ops.admin_app, name="admin")


def main() -> None:
    try:
        app()
    except CliError as exc:
        note(f"tocsin: {exc}")
        sys.exit(int(exc.code))
    except ArgError as exc:
        note(f"tocsin: {exc}")
        sys.exit(int(Exit.USAGE))
