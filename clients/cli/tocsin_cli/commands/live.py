"""``tocsin tail`` (the live incident stream) and ``tocsin report`` (KPIs)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any

import httpx
import typer

from tocsin_cli.client import problem_message
from tocsin_cli.context import OutputOpt, note, now, out, state, width
from tocsin_cli.exitcodes import CliError, Exit, exit_for_status
from tocsin_cli.output import Column, OutputFormat, json_line, render, render_data
from tocsin_cli.parsing import parse_time_arg, rfc3339
from tocsin_cli.profiles import API_PREFIX
from tocsin_cli.sse import Event, StreamDropped, resume_forever


def _incident(data: dict[str, Any]) -> dict[str, Any]:
    inner = data.get("incident")
    return inner if isinstance(inner, dict) else data


def event_line(event: Event) -> str:
    """One readable line per event: its id, what happened, to which incident."""
    try:
        data = json.loads(event.data)
    except ValueError:
        return f"{event.id or '-'}  {event.event}  {event.data}"
    if not isinstance(data, dict):
        return f"{event.id or '-'}  {event.event}  {event.data}"
    incident = _incident(data)
    kind = data.get("type") or data.get("kind") or event.event
    fields = [
        str(data.get("occurred_at") or data.get("at") or incident.get("updated_at") or ""),
        str(kind),
        str(incident.get("id") or incident.get("incident_id") or data.get("incident_id") or ""),
        str(incident.get("status") or ""),
        str(incident.get("service_id") or ""),
        str(incident.get("title") or ""),
    ]
    return "  ".join(f for f in fields if f)


def stream_error(event: Event) -> CliError:
    """The problem an ``error`` event carries (e.g. the token was revoked mid-stream)."""
    try:
        body: Any = json.loads(event.data)
    except ValueError:
        body = event.data
    status = int(body.get("status") or 500) if isinstance(body, dict) else 500
    return CliError(problem_message(status, body), exit_for_status(status))


def tail(
    ctx: typer.Context,
    service: Annotated[
        list[str] | None, typer.Option("--service", help="only this service's (repeatable)")
    ] = None,
    last_event_id: Annotated[
        str | None, typer.Option("--last-event-id", help="resume after this event id")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="exit after this many events")
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Follow incidents as they change (Server-Sent Events), reconnecting after a dropped
    connection from the last event seen (Last-Event-ID): nothing is missed or repeated.
    `-o json` prints one JSON object per line: {"id", "event", "data"}.

    Example: tocsin tail -o json
    """
    st = state(ctx)
    api = st.client()  # checks the login before streaming
    headers = dict(api.http.headers)
    headers["Accept"] = "text/event-stream"
    url = api.base_url + API_PREFIX + "/incidents/stream"
    params = {"service_id": service or []}
    api.close()
    timeout = httpx.Timeout(st.timeout, read=60.0)  # the api sends a keep-alive comment meanwhile

    def open_stream(resume_from: str | None) -> Iterator[str]:
        request_headers = dict(headers)
        if resume_from:
            request_headers["Last-Event-ID"] = resume_from
        try:
            with httpx.stream(
                "GET", url, params=params, headers=request_headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    try:
                        body: Any = response.json()
                    except ValueError:
                        body = response.text
                    message = problem_message(response.status_code, body, response.reason_phrase)
                    if response.status_code >= 500:
                        raise StreamDropped(message)
                    raise CliError(message, exit_for_status(response.status_code))
                note(
                    f"following {url} from event {resume_from}"
                    if resume_from
                    else f"following {url} (Ctrl-C to stop)"
                )
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise StreamDropped(str(exc) or type(exc).__name__) from None

    def reconnecting(resume_from: str | None, exc: Exception) -> None:
        note(f"stream dropped ({exc}); reconnecting after event {resume_from or '(none)'}")

    seen = 0
    try:
        for event in resume_forever(open_stream, last_event_id, on_reconnect=reconnecting):
            if event.event == "error":  # the api ends the stream with a problem
                raise stream_error(event)
            if output is OutputFormat.json:
                try:
                    data: Any = json.loads(event.data)
                except ValueError:
                    data = event.data
                out(json_line({"id": event.id, "event": event.event, "data": data}) + "\n")
            elif output is OutputFormat.yaml:
                out(
                    render_data(
                        [{"id": event.id, "event": event.event, "data": event.data}], output
                    )
                )
            else:
                out(event_line(event) + "\n")
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# --group-by value -> the key its value has in a row of GET /analytics/incidents
REPORT_GROUPS: dict[str, str] = {
    "service": "service_id",
    "team": "team_id",
    "user": "user_id",
    "urgency": "urgency",
    "priority": "priority",
}
# The duration KPIs a row holds as distributions (docs/insight.md defines each)
REPORT_KPIS = (
    "seconds_to_first_ack",
    "seconds_to_resolve",
    "seconds_to_engage",
    "seconds_to_mobilize",
)
PERIODS = ("day", "week", "month")
STATS = ("count", "mean", "p50", "p90", "p95", "max")


def seconds_text(value: Any) -> str:
    """A duration as a person reads it: ``42s``, ``3m 05s``, ``2h 07m``, ``3d 4h``."""
    if not isinstance(value, int | float):
        return "-"
    total = round(float(value))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def report_table_rows(answer: Any, kpis: Sequence[str]) -> list[dict[str, Any]]:
    """One table row per group (and period) and KPI: the group's values, its incident count,
    the KPI's name and its distribution (count, mean, p50, p90, p95, max)."""
    data = answer.get("data") if isinstance(answer, dict) else None
    out: list[dict[str, Any]] = []
    for row in data if isinstance(data, list) else []:
        if not isinstance(row, dict):
            continue
        for kpi in kpis:
            dist = row.get(kpi)
            dist = dist if isinstance(dist, dict) else {}
            out.append(
                {
                    **row,
                    "kpi": kpi.removeprefix("seconds_to_"),
                    **{stat: dist.get(stat) for stat in STATS},
                }
            )
    return out


def _duration_cell(stat: str) -> Callable[[Mapping[str, Any]], str]:
    def cell(row: Mapping[str, Any]) -> str:
        return seconds_text(row.get(stat))

    return cell


def report_columns(group_by: Sequence[str], period: str | None) -> list[Column]:
    """The groups' columns, the period's, then incidents, KPI and its distribution."""
    columns = [Column(REPORT_GROUPS[g], REPORT_GROUPS[g], wrap=False) for g in group_by]
    if period:
        columns.append(Column(period, "period_start", wrap=False))
    columns += [Column("incidents", "total_incident_count"), Column("kpi", "kpi")]
    columns.append(Column("count", "count"))
    for stat in STATS[1:]:
        columns.append(Column(stat, _duration_cell(stat)))
    return columns


def report(
    ctx: typer.Context,
    group_by: Annotated[
        list[str] | None,
        typer.Option("--group-by", help=f"{', '.join(REPORT_GROUPS)}; repeat it to group by more"),
    ] = None,
    period: Annotated[str | None, typer.Option(help=f"a row per {', '.join(PERIODS)}")] = None,
    since: Annotated[str, typer.Option(help="from (RFC 3339 or a duration ago)")] = "30d",
    until: Annotated[str, typer.Option(help="until (RFC 3339 or now)")] = "now",
    team: Annotated[str | None, typer.Option(help="only this team's incidents")] = None,
    service: Annotated[str | None, typer.Option(help="only this service's incidents")] = None,
    urgency: Annotated[str | None, typer.Option(help="high or low")] = None,
    priority: Annotated[str | None, typer.Option(help="an insight.priorities id, e.g. P1")] = None,
    time_zone: Annotated[
        str | None, typer.Option("--time-zone", help="IANA zone periods are cut in (UTC)")
    ] = None,
    kpi: Annotated[
        list[str] | None,
        typer.Option(
            help=f"{', '.join(REPORT_KPIS)} (repeat it; default the first two)",
        ),
    ] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Incident KPIs from insight (GET /analytics/incidents): per group, the number of
    incidents and each KPI's distribution (count, mean, p50, p90, p95, max).

    Example: tocsin report --group-by team --since 7d
    """
    groups = group_by or ["service"]
    for name in groups:
        if name not in REPORT_GROUPS:
            raise CliError(
                f"--group-by {name!r}: expected one of {', '.join(REPORT_GROUPS)}", Exit.USAGE
            )
    if period is not None and period not in PERIODS:
        raise CliError(f"--period {period!r}: expected one of {', '.join(PERIODS)}", Exit.USAGE)
    kpis = kpi or list(REPORT_KPIS[:2])
    for name in kpis:
        if name not in REPORT_KPIS:
            raise CliError(f"--kpi {name!r}: expected one of {', '.join(REPORT_KPIS)}", Exit.USAGE)
    moment = now()
    query: dict[str, Any] = {
        "group_by": groups,
        "period": period,
        "since": rfc3339(parse_time_arg(since, moment, "--since")),
        "until": rfc3339(parse_time_arg(until, moment, "--until")),
        "team_id": team,
        "service_id": service,
        "urgency": urgency,
        "priority": priority,
        "time_zone": time_zone,
    }
    with state(ctx).client() as api:
        answer = api.get("/analytics/incidents", query)
    if output is OutputFormat.table:
        out(
            render(
                report_table_rows(answer, kpis),
                output,
                report_columns(groups, period),
                empty="no incidents in that range",
                width=width(),
            )
        )
    else:
        out(render_data(answer, output))
