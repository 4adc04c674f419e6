"""``tocsin automation approve|reject``: decide an automation action that waits for
approval on an incident; ``tocsin automation dry-run``: how often a rule would have fired
(docs/automation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tocsin_cli.context import OutputOpt, now, out, state, width
from tocsin_cli.output import Column, OutputFormat, render_data, render_fields, render_table
from tocsin_cli.parsing import ArgError, parse_time_arg, rfc3339

app = typer.Typer(
    help="Decide automation actions that wait for approval; dry-run a rule.", no_args_is_help=True
)

IncidentArg = Annotated[str, typer.Argument(help="incident id")]
RuleArg = Annotated[str, typer.Argument(help="the automation rule's id")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (on the timeline)")]
APPROVAL_COLUMNS = [
    Column("rule", "rule_id"),
    Column("trigger", "trigger"),
    Column("state", "state"),
    Column("by", "decided_by"),
    Column("expires", "expires_at"),
    Column("key", "key", wrap=False),
]


def _decide(
    ctx: typer.Context, incident: str, rule: str, verdict: str, reason: str, output: OutputFormat
) -> None:
    with state(ctx).client() as api:
        answer = api.post(f"/incidents/{incident}/automation/{rule}/{verdict}", {"reason": reason})
    if output is OutputFormat.table:
        out(render_table(answer.get("approvals", []), APPROVAL_COLUMNS, width=width()))
    else:
        out(render_data(answer, output))


@app.command()
def approve(
    ctx: typer.Context,
    incident: IncidentArg,
    rule: RuleArg,
    reason: ReasonOpt = "",
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Approve the rule's actions that wait on the incident: they run now.

    Example: tocsin automation approve INCIDENT_ID restart-checkout --reason "runbook reviewed"
    """
    _decide(ctx, incident, rule, "approve", reason, output)


@app.command()
def reject(
    ctx: typer.Context,
    incident: IncidentArg,
    rule: RuleArg,
    reason: ReasonOpt = "",
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Reject the rule's actions that wait on the incident: they never run.

    Example: tocsin automation reject INCIDENT_ID restart-checkout --reason "not during the sale"
    """
    _decide(ctx, incident, rule, "reject", reason, output)


DRY_RUN_FIELDS = [
    Column("rule", "rule_id"),
    Column("window", lambda d: f"{d.get('since', '')} .. {d.get('until', '')}"),
    Column("fires", "fires"),
    Column("incidents", "incidents"),
    Column(
        "by trigger", lambda d: ", ".join(f"{k}: {v}" for k, v in d.get("by_trigger", {}).items())
    ),
    Column("sample", lambda d: " ".join(d.get("sample", []))),
    Column("read", "incidents_read"),
]


def rule_from_file(path: Path) -> dict[str, Any]:
    """One rule as written in the config's ``automation.rules`` (YAML or JSON)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ArgError(f"--file {str(path)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ArgError(f"--file {str(path)!r}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ArgError(f"--file {str(path)!r}: expected one rule (a mapping with id, on, action)")
    return data


@app.command("dry-run")
def dry_run(
    ctx: typer.Context,
    rule: Annotated[str | None, typer.Argument(help="a configured rule's id")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="a rule as written in automation.rules (YAML/JSON)"),
    ] = None,
    since: Annotated[
        str, typer.Option("--since", help="RFC 3339, or a duration ago (30d)")
    ] = "30d",
    until: Annotated[
        str | None, typer.Option("--until", help="RFC 3339, or a duration ago (default: now)")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """How often a rule would have fired over past incidents (insight's store).

    Examples: tocsin automation dry-run restart-checkout --since 7d;
    tocsin automation dry-run --file new-rule.yaml -o json
    """
    if (rule is None) == (file is None):
        raise ArgError("give a configured rule's id or --file with a rule, not both")
    moment = now()
    body: dict[str, Any] = {"since": rfc3339(parse_time_arg(since, moment, "--since"))}
    if until is not None:
        body["until"] = rfc3339(parse_time_arg(until, moment, "--until"))
    if file is not None:
        body["rule"] = rule_from_file(file)
    else:
        body["rule_id"] = rule
    with state(ctx).client() as api:
        answer = api.post("/automation/dry-run", body)
    if output is OutputFormat.table:
        out(answer.get("summary", "") + "\n")
        out(render_fields(answer, DRY_RUN_FIELDS, width=width()))
    else:
        out(render_data(answer, output))
