"""``tocsin automation approve|reject``: decide an automation action that waits for
approval on an incident (docs/automation.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tocsin_cli.context import OutputOpt, out, state, width
from tocsin_cli.output import Column, OutputFormat, render_data, render_table

app = typer.Typer(help="Decide automation actions that wait for approval.", no_args_is_help=True)

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
