"""``tocsin oncall`` and ``tocsin schedule show|list|override``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

from tocsin_cli.context import OutputOpt, now, out, state, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.output import Column, OutputFormat, render, render_data, render_fields
from tocsin_cli.parsing import parse_duration_arg, parse_time_arg, rfc3339

ONCALL_COLUMNS = [
    Column("user", "user_id", ("user.id",)),
    Column("schedule", "schedule_id", ("schedule.id",)),
    Column("escalation policy", "escalation_policy_id", ("escalation_policy.id",)),
    Column("level", "escalation_level"),
    Column("from", "start"),
    Column("until", "end"),
]
SCHEDULE_COLUMNS = [
    Column("id", "id", ("schedule_id",), wrap=False),
    Column("name", "name", ("summary",)),
    Column("time zone", "time_zone"),
    Column("team", "team_id"),
]
ENTRY_COLUMNS = [
    Column("from", "start"),
    Column("until", "end"),
    Column("on call", lambda span: span.get("user_ids") or "nobody (a gap)"),
]


def oncall(
    ctx: typer.Context,
    schedule: Annotated[str | None, typer.Option("--schedule", help="schedule id")] = None,
    policy: Annotated[
        str | None, typer.Option("--escalation-policy", help="escalation policy id")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="user id")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Who is on call now, per schedule and escalation policy level.

    Example: tocsin oncall --schedule primary
    """
    query = {"schedule_id": schedule, "escalation_policy_id": policy, "user_id": user}
    with state(ctx).client() as api:
        oncalls = api.get("/oncalls", query).get("oncalls", [])
    out(render(oncalls, output, ONCALL_COLUMNS, empty="nobody is on call for that", width=width()))


schedule_app = typer.Typer(
    help="Schedules: the rendered final schedule, overrides.", no_args_is_help=True
)


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Every schedule.

    Example: tocsin schedule list
    """
    with state(ctx).client() as api:
        schedules = list(api.pages("/schedules", "schedules", {"limit": 100}))
    out(render(schedules, output, SCHEDULE_COLUMNS, empty="no schedules", width=width()))


def schedule_entries(schedule: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered final schedule's entries, wherever the answer keeps them."""
    for path in (
        ("final_schedule",),
        ("final_schedule", "rendered_schedule_entries"),
        ("final_schedule", "entries"),
        ("rendered_schedule_entries",),
        ("entries",),
        ("shifts",),
    ):
        value: Any = schedule
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            return value
    return []


@schedule_app.command("show")
def schedule_show(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="schedule id")],
    since: Annotated[str, typer.Option(help="from (RFC 3339, now, or a duration ago)")] = "now",
    days: Annotated[int, typer.Option(min=1, max=90, help="how many days from --since")] = 7,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """The final schedule (layers, restrictions and overrides applied) for a range.

    Example: tocsin schedule show primary --days 7
    """
    start = parse_time_arg(since, now(), "--since")
    query = {"since": rfc3339(start), "until": rfc3339(start + timedelta(days=days))}
    with state(ctx).client() as api:
        schedule = api.get(f"/schedules/{id}", query)
    if output is not OutputFormat.table:
        out(render_data(schedule, output))
        return
    out(
        render(
            schedule_entries(schedule),
            output,
            ENTRY_COLUMNS,
            title=f"schedule {id}",
            empty="nobody on call in that range",
            width=width(),
        )
    )


@schedule_app.command("override")
def schedule_override(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="schedule id")],
    user: Annotated[str | None, typer.Option("--user", help="who takes the shift")] = None,
    start: Annotated[str, typer.Option(help="from (RFC 3339 or now)")] = "now",
    end: Annotated[str | None, typer.Option(help="until (RFC 3339)")] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="or how long: 2h, 1d")
    ] = None,
    delete: Annotated[
        str | None, typer.Option("--delete", help="remove this override id instead")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Put someone on call in place of the schedule for a while (or --delete an override).

    Example: tocsin schedule override primary --user bob --duration 2h
    """
    with state(ctx).client() as api:
        if delete:
            api.delete(f"/schedules/{id}/overrides/{delete}")
            out(f"override {delete} deleted\n") if output is OutputFormat.table else out(
                render_data({"deleted": delete}, output)
            )
            return
        if not user:
            raise CliError("--user: required (who is on call instead)", Exit.USAGE)
        if bool(end) == bool(duration):
            raise CliError("give --end or --duration, one of the two", Exit.USAGE)
        moment = now()
        begin = parse_time_arg(start, moment, "--start")
        finish = (
            parse_time_arg(end, moment, "--end")
            if end
            else begin + parse_duration_arg(duration or "")
        )
        if finish <= begin:
            raise CliError("--end: must be after --start", Exit.USAGE)
        override = api.post(
            f"/schedules/{id}/overrides",
            {"user_id": user, "start": rfc3339(begin), "end": rfc3339(finish)},
        )
    if output is OutputFormat.table:
        out(render_fields(override, width=width()))
    else:
        out(render_data(override, output))
