"""``tocsin config check`` and ``tocsin admin topics|lag|replay``: no api needed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from tocsin_common.topics import DEFAULT_PARTITIONS, MAX_PARTITIONS

from tocsin_cli.context import OutputOpt, note, now, out, width
from tocsin_cli.exitcodes import CliError, Exit
from tocsin_cli.kafka_admin import KafkaAdmin, replay_rows
from tocsin_cli.output import Column, OutputFormat, render, render_data
from tocsin_cli.parsing import parse_time_arg

config_app = typer.Typer(
    help="Check a configuration file as the services do at start-up.", no_args_is_help=True
)


@config_app.command("check")
def check(
    file: Annotated[str, typer.Argument(help="the YAML configuration file")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Validate FILE with the services' own loader: exit 0 when they would start with it,
    1 with every problem (file:line: field path: problem) when they would refuse it.

    Example: tocsin config check config/tocsin.example.yaml
    """
    from tocsin_common.config.loader import ConfigError, load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        if output is OutputFormat.table:
            for issue in exc.issues:
                out(f"{issue}\n")
            note(f"{file}: {len(exc.issues)} problem(s): the services would not start with it")
        else:
            out(
                render_data(
                    {"file": file, "valid": False, "issues": [asdict(i) for i in exc.issues]},
                    output,
                )
            )
        raise typer.Exit(int(Exit.ERROR)) from None
    summary = {
        "services": len(config.services),
        "teams": len(config.teams),
        "users": len(config.users),
        "schedules": len(config.schedules),
        "escalation_policies": len(config.escalation_policies),
    }
    if output is OutputFormat.table:
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items())
        out(f"{file}: valid ({counts})\n")
    else:
        out(render_data({"file": file, "valid": True, "issues": [], **summary}, output))


admin_app = typer.Typer(
    help="Kafka administration: topics, consumer lag, offset replay.", no_args_is_help=True
)

TimeoutOpt = Annotated[
    float, typer.Option("--kafka-timeout", min=0.5, help="seconds to wait for Kafka")
]
BootstrapOpt = Annotated[
    str,
    typer.Option(
        "--bootstrap",
        envvar="TOCSIN_KAFKA_BOOTSTRAP",
        help="Kafka bootstrap servers (TOCSIN_KAFKA_BOOTSTRAP; its security settings too)",
    ),
]

TOPIC_COLUMNS = [
    Column("topic", "topic"),
    Column("expected partitions", "expected_partitions"),
    Column("partitions", "partitions"),
    Column("status", "status"),
]
LAG_COLUMNS = [
    Column("group", "group"),
    Column("service", "service"),
    Column("topic", "topic"),
    Column("partitions", "partitions"),
    Column("committed", "committed"),
    Column("end", "end"),
    Column("lag", "lag"),
    Column("never committed", "uncommitted_partitions"),
]
REPLAY_COLUMNS = [
    Column("topic", "topic"),
    Column("partition", "partition"),
    Column("committed before", "before"),
    Column("committed now", "after"),
]


@admin_app.command()
def topics(
    bootstrap: BootstrapOpt = "127.0.0.1:9092",
    partitions: Annotated[
        int,
        typer.Option(
            "--partitions",
            envvar="TOCSIN_KAFKA_PARTITIONS",
            min=1,
            max=MAX_PARTITIONS,
            help="partitions the pipeline's topics should have (TOCSIN_KAFKA_PARTITIONS, "
            "as the services)",
        ),
    ] = DEFAULT_PARTITIONS,
    kafka_timeout: TimeoutOpt = 15.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Check that every topic of Tocsin exists with its partitions (exit 1 when not).

    Example: tocsin admin topics
    """
    with KafkaAdmin(bootstrap, kafka_timeout) as admin:
        rows = [asdict(r) | {"ok": r.ok} for r in admin.topics(partitions)]
    out(render(rows, output, TOPIC_COLUMNS, width=width()))
    bad = [r for r in rows if not r["ok"]]
    if bad:
        note(f"{len(bad)} topic(s) not as expected")
        raise typer.Exit(int(Exit.ERROR))


@admin_app.command()
def lag(
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="these groups instead of the services' (repeatable)"),
    ] = None,
    bootstrap: BootstrapOpt = "127.0.0.1:9092",
    kafka_timeout: TimeoutOpt = 15.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Consumer lag of each service's group, per topic: records not yet processed.

    Example: tocsin admin lag
    """
    with KafkaAdmin(bootstrap, kafka_timeout) as admin:
        rows = [asdict(r) for r in admin.lag(group or None)]
    out(render(rows, output, LAG_COLUMNS, width=width()))


@admin_app.command()
def replay(
    group: Annotated[str, typer.Argument(help="consumer group id, e.g. tocsin-escalation")],
    topic: Annotated[str, typer.Option("--topic", help="the topic whose offsets to reset")],
    to_earliest: Annotated[
        bool, typer.Option("--to-earliest", help="from the oldest retained record")
    ] = False,
    to_datetime: Annotated[
        str | None,
        typer.Option(
            "--to-datetime", help="from the first record at or after this time (RFC 3339)"
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the new offsets, change nothing")
    ] = False,
    bootstrap: BootstrapOpt = "127.0.0.1:9092",
    kafka_timeout: TimeoutOpt = 15.0,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Reset a stopped consumer group's offsets on a topic, so it processes the records
    again. Refused (exit 5) while the group has members: stop its service first.

    Example: tocsin admin replay tocsin-escalation --topic incidents.events --to-earliest --yes
    """
    if to_earliest == (to_datetime is not None):
        raise CliError("give --to-earliest or --to-datetime TIME, one of the two", Exit.USAGE)
    moment = parse_time_arg(to_datetime, now(), "--to-datetime") if to_datetime else None
    with KafkaAdmin(bootstrap, kafka_timeout) as admin:
        before, after = admin.replay_plan(group, topic, moment)
        rows = [asdict(r) for r in replay_rows(before, after)]
        if dry_run:
            out(render(rows, output, REPLAY_COLUMNS, width=width()))
            note("dry run: nothing changed")
            return
        if not yes:
            # The plan goes with the question, on stderr: stdout is for the result.
            note(render(rows, OutputFormat.table, REPLAY_COLUMNS, width=width()).rstrip())
            typer.confirm(f"reset group {group} on {topic} to these offsets?", abort=True, err=True)
        admin.commit(group, after)
    out(render(rows, output, REPLAY_COLUMNS, width=width()))
