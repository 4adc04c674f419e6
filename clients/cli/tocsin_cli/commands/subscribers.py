"""``tocsin subscribers add|list|delete``: the status page's subscribers (managers;
docs/status-page.md#subscribers)."""

from __future__ import annotations

from typing import Annotated

import typer

from tocsin_cli.context import OutputOpt, out, state, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.output import Column, OutputFormat, render, render_data

app = typer.Typer(
    help="The status page's subscribers: e-mail addresses (confirmed by their owner) and "
    "webhooks that receive its status updates.",
    no_args_is_help=True,
)

ROUTE = "/status_page/subscriptions"
COLUMNS = [
    Column("id", "subscription_id", wrap=False),
    Column("kind", "kind"),
    Column("address", "address"),
    Column("components", "components"),
    Column("state", "state"),
    Column("created by", "created_by"),
    Column("created", "created_at"),
]


@app.command()
def add(
    ctx: typer.Context,
    email: Annotated[
        str | None, typer.Option("--email", help="an address: it gets a confirmation link")
    ] = None,
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="a URL: confirmed at once, deliveries signed")
    ] = None,
    components: Annotated[
        list[str] | None,
        typer.Option("--component", "-c", help="a component id (repeat; none: every component)"),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Subscribe an e-mail address or a webhook to status updates; prints its id and state.

    Example: tocsin subscribers add --email ana@example.com -c payments -c storefront
    """
    if bool(email) == bool(webhook):
        raise CliError("give --email or --webhook (one of them)", Exit.USAGE)
    kind, address = ("email", email) if email else ("webhook", webhook)
    body = {"kind": kind, "address": address, "components": components or []}
    with state(ctx).client() as api:
        made = api.post(ROUTE, body)
    if output is OutputFormat.table:
        out(f"{made['subscription_id']} {made['state']}\n")
    else:
        out(render_data(made, output))


@app.command("list")
def list_(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """The subscriptions you manage.

    Example: tocsin subscribers list -o json
    """
    with state(ctx).client() as api:
        found = api.get(ROUTE).get("subscriptions", [])
    out(render(found, output, COLUMNS, empty="no subscribers", width=width()))


@app.command()
def delete(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="subscription ids")],
) -> None:
    """Delete subscriptions: nothing more is sent to them.

    Example: tocsin subscribers delete SUBSCRIPTION_ID
    """
    with state(ctx).client() as api:
        for id in ids:
            api.delete(f"{ROUTE}/{id}")
            out(f"deleted {id}\n")
