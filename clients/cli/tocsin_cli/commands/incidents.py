"""``tocsin incidents list|show|ack|resolve|snooze|reassign|note|status-update|impact``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from tocsin_cli.client import ApiClient
from tocsin_cli.context import OutputOpt, note, now, out, state, width
from tocsin_cli.exitcodes import CliError, Exit, exit_for_status
from tocsin_cli.output import Column, OutputFormat, render, render_data, render_fields, render_table
from tocsin_cli.parsing import parse_duration_arg, parse_time_arg, rfc3339

BULK_MAX = 100  # incidents per bulk request (the api's limit)
PAST = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "snooze": "snoozed",
    "reassign": "reassigned",
}

app = typer.Typer(help="List, show and act on incidents.", no_args_is_help=True)


class Status(StrEnum):
    triggered = "triggered"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Urgency(StrEnum):
    high = "high"
    low = "low"


INCIDENT_COLUMNS = [
    Column("id", "id", ("incident_id",), wrap=False),
    Column("status", "status"),
    Column("urgency", "urgency"),
    Column("service", "service_id", ("service.id",)),
    Column("title", "title", ("summary",)),
    Column("alerts", "alert_count"),
    Column("created", "created_at"),
]
INCIDENT_FIELDS = [
    *INCIDENT_COLUMNS,
    Column("severity", "severity"),
    Column("priority", "priority"),
    Column("assigned", "assigned_user_id"),
    Column("policy", "escalation_policy_id"),
    Column("updated", "updated_at"),
    Column("resolved", "resolved_at"),
    Column("snoozed until", "snoozed_until"),
    Column("suppressed", "suppressed_reason"),
    Column("labels", "labels"),
]
LOG_COLUMNS = [
    Column("at", "at"),
    Column("type", "type"),
    Column("actor", "actor"),
    Column("message", "message"),
]
OUTCOME_COLUMNS = [
    Column("incident", "id", ("incident_id",), wrap=False),
    Column("status", "status"),
    Column(
        "outcome",
        lambda r: (
            "done" if 200 <= int(r.get("status") or 0) < 300 else r.get("detail") or "refused"
        ),
    ),
]

IdsArg = Annotated[list[str] | None, typer.Argument(help="incident ids (or select by filter)")]
StatusOpt = Annotated[
    list[Status] | None,
    typer.Option("--status", help="triggered, acknowledged or resolved (repeatable)"),
]
ServiceOpt = Annotated[str | None, typer.Option("--service", help="service id")]
TeamOpt = Annotated[str | None, typer.Option("--team", help="team id")]
UrgencyOpt = Annotated[Urgency | None, typer.Option("--urgency")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="RFC 3339 time or a duration ago (24h)")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="RFC 3339 time or a duration ago")]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="act on a filter's incidents without asking")
]


def incident_id(incident: dict[str, Any]) -> str:
    return str(incident.get("id") or incident.get("incident_id") or "")


def filters(
    statuses: list[Status] | None,
    service: str | None,
    team: str | None,
    urgency: Urgency | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    moment = now()
    return {
        "status": [s.value for s in statuses or []],
        "service_id": service,
        "team_id": team,
        "urgency": urgency.value if urgency else None,
        "since": rfc3339(parse_time_arg(since, moment, "--since")) if since else None,
        "until": rfc3339(parse_time_arg(until, moment, "--until")) if until else None,
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    status: StatusOpt = None,
    service: ServiceOpt = None,
    team: TeamOpt = None,
    urgency: UrgencyOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many incidents (all pages)")] = 25,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Incidents, newest first, by status, service, team, urgency and time.

    Example: tocsin incidents list --status triggered --status acknowledged -o json
    """
    query = filters(status, service, team, urgency, since, until)
    query["limit"] = min(limit, 100)
    with state(ctx).client() as api:
        incidents = list(api.pages("/incidents", "incidents", query, limit=limit))
    out(render(incidents, output, INCIDENT_COLUMNS, empty="no incidents match", width=width()))


@app.command()
def show(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="incident id")],
    timeline: Annotated[bool, typer.Option(help="also the timeline (log entries)")] = True,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """One incident, with its timeline.

    Example: tocsin incidents show INCIDENT_ID -o yaml
    """
    with state(ctx).client() as api:
        response = api.request("GET", f"/incidents/{id}")
        incident = dict(response.body)
        entries = api.get(f"/incidents/{id}/log_entries").get("log_entries", []) if timeline else []
    if output is not OutputFormat.table:
        if timeline:
            incident = {**incident, "log_entries": entries}
        out(render_data(incident, output))
        return
    out(render_fields(incident, INCIDENT_FIELDS, width=width()))
    if timeline:
        out(
            "\n"
            + render_table(
                entries, LOG_COLUMNS, title="timeline", empty="no log entries", width=width()
            )
        )


def _select(
    api: ApiClient,
    ids: list[str] | None,
    query: dict[str, Any],
    yes: bool,
    verb: str,
    default_statuses: list[str],
) -> list[dict[str, Any]]:
    """The incidents to act on, each ``{"id", "etag"?}``: the ids given, or the filter's
    matches after asking (unless ``yes``)."""
    has_filter = any(v for v in query.values())
    if ids and has_filter:
        raise CliError(
            "give incident ids or a filter (--service, --status, ...), not both", Exit.USAGE
        )
    if ids:
        # Named incidents are acted on as they are now; only a filter's matches carry the
        # ETag of the state the person confirmed (or the filter matched, with --yes).
        return [{"id": i} for i in ids]
    if not has_filter:
        raise CliError(
            f"which incidents? give ids, or a filter such as --service ID (to {verb} every match)",
            Exit.USAGE,
        )
    if not query["status"]:
        query["status"] = default_statuses
    matches = list(api.pages("/incidents", "incidents", {**query, "limit": 100}))
    if not matches:
        return []
    if not yes:
        # The matches go with the question, on stderr: stdout is for the outcomes.
        note(render_table(matches, INCIDENT_COLUMNS, width=width()).rstrip())
        typer.confirm(f"{verb} these {len(matches)} incident(s)?", abort=True, err=True)
    # Each with the ETag of the state listed: the bulk endpoint refuses (412) one changed since.
    return [{"id": incident_id(m), "etag": m.get("etag")} for m in matches]


def _act(
    ctx: typer.Context,
    action: str,
    ids: list[str] | None,
    query: dict[str, Any],
    yes: bool,
    fields: dict[str, Any],
    output: OutputFormat,
    default_statuses: list[str],
) -> None:
    with state(ctx).client() as api:
        if ids and len(ids) == 1 and not any(query.values()):
            # One incident: its own endpoint, so a refusal is the api's problem line naming
            # the field. No If-Match: the person named the incident, not a state of it.
            answer = api.request("POST", f"/incidents/{ids[0]}/{action}", json=fields)
            body = answer.body if isinstance(answer.body, dict) else {}
            result = {"id": ids[0], "status": answer.status, "command_id": body.get("command_id")}
            out(render([result], output, OUTCOME_COLUMNS, width=width()))
            return
        targets = _select(api, ids, query, yes, action, default_statuses)
        if not targets:
            out(render([], output, OUTCOME_COLUMNS, empty="no incidents match: nothing to do"))
            return
        incidents = [{k: v for k, v in t.items() if v} for t in targets]
        results: list[dict[str, Any]] = []
        for start in range(0, len(incidents), BULK_MAX):
            chunk = incidents[start : start + BULK_MAX]
            answer = api.post("/incidents/bulk", {"action": action, "incidents": chunk, **fields})
            results.extend(answer.get("results", []) if isinstance(answer, dict) else [])
    out(render(results, output, OUTCOME_COLUMNS, width=width()))
    failed = [r for r in results if not 200 <= int(r.get("status") or 0) < 300]
    if failed:
        codes = {int(r.get("status") or 0) for r in failed}
        note(f"{len(failed)} of {len(results)} incident(s) not {PAST[action]}")
        single = codes.pop() if len(codes) == 1 else 0
        raise typer.Exit(_exit_of(single))


def _exit_of(status: int) -> int:
    return int(exit_for_status(status)) if status else int(Exit.ERROR)


@app.command()
def ack(
    ctx: typer.Context,
    ids: IdsArg = None,
    status: StatusOpt = None,
    service: ServiceOpt = None,
    team: TeamOpt = None,
    urgency: UrgencyOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    yes: YesOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Acknowledge incidents: by id, or every triggered one a filter selects (asks first).

    Example: tocsin incidents ack --service checkout --status triggered --yes
    """
    query = filters(status, service, team, urgency, since, until)
    _act(ctx, "acknowledge", ids, query, yes, {}, output, ["triggered"])


@app.command()
def resolve(
    ctx: typer.Context,
    ids: IdsArg = None,
    status: StatusOpt = None,
    service: ServiceOpt = None,
    team: TeamOpt = None,
    urgency: UrgencyOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    yes: YesOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Resolve incidents: by id, or every open one a filter selects (asks first).

    Example: tocsin incidents resolve INCIDENT_ID
    """
    query = filters(status, service, team, urgency, since, until)
    _act(ctx, "resolve", ids, query, yes, {}, output, ["triggered", "acknowledged"])


@app.command()
def snooze(
    ctx: typer.Context,
    ids: IdsArg = None,
    duration: Annotated[
        str, typer.Option("--duration", "-d", help="how long: 30m, 2h, 1h30m")
    ] = "1h",
    status: StatusOpt = None,
    service: ServiceOpt = None,
    team: TeamOpt = None,
    urgency: UrgencyOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    yes: YesOpt = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Snooze acknowledged incidents: no page until the time is up.

    Example: tocsin incidents snooze INCIDENT_ID --duration 2h
    """
    seconds = int(parse_duration_arg(duration).total_seconds())
    query = filters(status, service, team, urgency, since, until)
    _act(ctx, "snooze", ids, query, yes, {"duration_seconds": seconds}, output, ["acknowledged"])


@app.command()
def reassign(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="incident ids")],
    user: Annotated[str | None, typer.Option("--user", help="the user id to assign")] = None,
    policy: Annotated[
        str | None, typer.Option("--escalation-policy", help="escalation policy id")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Reassign incidents to people or to an escalation policy.

    Example: tocsin incidents reassign INCIDENT_ID --user bob
    """
    if bool(user) == bool(policy):
        raise CliError("give --user or --escalation-policy, one of the two", Exit.USAGE)
    fields: dict[str, Any] = {"user_ids": [user]} if user else {"escalation_policy_id": policy}
    _act(
        ctx, "reassign", ids, filters(None, None, None, None, None, None), True, fields, output, []
    )


@app.command("note")
def note_(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="incident id")],
    content: Annotated[str, typer.Argument(help="the note's text")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Add a note to an incident's timeline.

    Example: tocsin incidents note INCIDENT_ID "rolled back the 14:02 deploy"
    """
    with state(ctx).client() as api:
        answer = api.post(f"/incidents/{id}/notes", {"content": content})
    if output is OutputFormat.table:
        out(f"note added to {id}\n")
    else:
        out(render_data(answer, output))


@app.command("priority")
def priority_(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="incident id")],
    priority: Annotated[str, typer.Argument(help="a priority id, e.g. P1")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Set an incident's priority (one of insight.priorities when any are configured).

    Example: tocsin incidents priority INCIDENT_ID P1
    """
    with state(ctx).client() as api:
        answer = api.post(f"/incidents/{id}/priority", {"priority": priority})
    if output is OutputFormat.table:
        out(f"priority of {id} set to {priority}\n")
    else:
        out(render_data(answer, output))


class PublicStatus(StrEnum):
    investigating = "investigating"
    identified = "identified"
    monitoring = "monitoring"
    resolved = "resolved"


@app.command("status-update")
def status_update(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="incident id")],
    status: Annotated[PublicStatus, typer.Option("--status", help="Statuspage's incident status")],
    message: Annotated[str, typer.Option("--message", "-m", help="the message for the public")],
    title: Annotated[
        str | None,
        typer.Option("--title", help="the public title (required on the first update)"),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Post a status update for the public status page (docs/status-page.md).

    Example: tocsin incidents status-update INCIDENT_ID --status identified
    --title "Checkout is slow" -m "We found the cause and are rolling out a fix."
    """
    body: dict[str, Any] = {"status": status.value, "message": message}
    if title:
        body["public_title"] = title
    with state(ctx).client() as api:
        answer = api.post(f"/incidents/{id}/status_updates", body)
    if output is not OutputFormat.table:
        out(render_data(answer, output))
        return
    out(f"status update posted on {id} ({answer.get('status')}): {answer.get('message')}\n")
    if answer.get("redactions"):
        note(f"redacted before posting: {', '.join(answer['redactions'])}")


class Impact(StrEnum):
    operational = "operational"
    degraded_performance = "degraded_performance"
    partial_outage = "partial_outage"
    major_outage = "major_outage"


@app.command("impact")
def impact(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="incident id")],
    level: Annotated[
        Impact | None,
        typer.Argument(
            metavar="[IMPACT]", help="its public impact; leave out with --clear", show_default=False
        ),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="clear it: the impact follows the urgency again")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Set an incident's public impact on the status page (docs/status-page.md): the state
    of its components while it is open (operational: none). --clear: it follows the
    urgency again (status_page.impact).

    Example: tocsin incidents impact INCIDENT_ID major_outage
    """
    if (level is None) == (not clear):
        raise CliError("give an IMPACT or --clear (not both)", Exit.USAGE)
    with state(ctx).client() as api:
        answer = api.put(
            f"/incidents/{id}/impact", {"impact": level.value if level is not None else None}
        )
    if output is not OutputFormat.table:
        out(render_data(answer, output))
        return
    shown = answer.get("impact") or "cleared (it follows the urgency)"
    out(f"public impact of {id}: {shown}\n")
