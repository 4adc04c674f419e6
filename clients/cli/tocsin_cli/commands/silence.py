"""``tocsin silence add|list|expire``, with amtool's matcher syntax."""

from __future__ import annotations

from typing import Annotated

import typer

from tocsin_cli.context import OutputOpt, now, out, state, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.output import Column, OutputFormat, render, render_data
from tocsin_cli.parsing import parse_duration_arg, parse_matchers, parse_time_arg, rfc3339

app = typer.Typer(
    help="Silences: mute alerts matching labels for a while (amtool's syntax).",
    no_args_is_help=True,
)

SILENCE_COLUMNS = [
    Column("id", "id", ("silence_id",), wrap=False),
    Column("matchers", "matchers"),
    Column("starts", "starts_at"),
    Column("ends", "ends_at"),
    Column("created by", "created_by", ("author", "actor")),
    Column("comment", "comment"),
]


@app.command()
def add(
    ctx: typer.Context,
    matchers: Annotated[
        list[str],
        typer.Argument(
            help='label matchers: name=value, name=~"regex", name!=value, name!~"regex"'
        ),
    ],
    comment: Annotated[str, typer.Option("--comment", "-c", help="why (required, as in amtool)")],
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="how long: 2h, 30m (default 1h)")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="only this service's alerts (default: all)")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="from (RFC 3339; default now)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="until (RFC 3339), instead of --duration")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Silence alerts whose labels match every matcher; prints the silence's id.

    Example: tocsin silence add alertname=DiskFull instance=~"web.*" -d 2h -c "disk swap"
    """
    parsed = parse_matchers(matchers)
    if duration and end:
        raise CliError("give --duration or --end, not both", Exit.USAGE)
    if not comment.strip():
        raise CliError("--comment: empty; say why the alerts are silenced", Exit.USAGE)
    moment = now()
    body: dict[str, object] = {"matchers": parsed, "comment": comment}
    if service:
        body["service_id"] = service
    if start:
        body["starts_at"] = rfc3339(parse_time_arg(start, moment, "--start"))
    if end:
        body["ends_at"] = rfc3339(parse_time_arg(end, moment, "--end"))
    else:
        body["duration_seconds"] = int(parse_duration_arg(duration or "1h").total_seconds())
    with state(ctx).client() as api:
        silence = api.post("/silences", body)
    if output is OutputFormat.table:
        out(f"{silence.get('id') or silence.get('silence_id')}\n")
    else:
        out(render_data(silence, output))


@app.command("list")
def list_(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Active and pending silences.

    Example: tocsin silence list -o json
    """
    with state(ctx).client() as api:
        silences = list(api.pages("/silences", "silences", {"limit": 100}))
    out(render(silences, output, SILENCE_COLUMNS, empty="no silences", width=width()))


@app.command()
def expire(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="silence ids")],
) -> None:
    """End silences now.

    Example: tocsin silence expire SILENCE_ID
    """
    with state(ctx).client() as api:
        for id in ids:
            api.delete(f"/silences/{id}")
            out(f"expired {id}\n")
