"""``tocsin tail`` (the live incident stream) and ``tocsin report`` (KPIs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


REPORT_GROUPS = ("service", "team", "user", "urgency", "priority")


def report_rows(report: Any) -> list[dict[str, Any]]:
    """The rows of an analytics answer: its list of groups (``data``, ``rows``, ``groups``
    ...), each a mapping of KPI name to value; or the one object it is."""
    if isinstance(report, list):
        return [r for r in report if isinstance(r, dict)]
    if isinstance(report, dict):
        for key in ("data", "rows", "groups", "results", "kpis"):
            value = report.get(key)
            if isinstance(value, list):
                return [r for r in value if isinstance(r, dict)]
        return [report]
    return []


def report_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Every key any row has, in first-seen order (a KPI the api adds shows up by itself);
    a distribution ({p50, p90, ...}) shows its mean and p90."""
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)

    def cell(key: str) -> Any:
        def get(row: Any) -> Any:
            value = row.get(key)
            if isinstance(value, dict) and ("p50" in value or "mean" in value):
                parts = [f"{k} {value[k]}" for k in ("mean", "p50", "p90") if k in value]
                return ", ".join(parts)
            return value

        return get

    return [Column(key, cell(key)) for key in keys]


def report(
    ctx: typer.Context,
    group_by: Annotated[
        str, typer.Option("--group-by", help=f"one of {', '.join(REPORT_GROUPS)}")
    ] = "service",
    since: Annotated[str, typer.Option(help="from (RFC 3339 or a duration ago)")] = "30d",
    until: Annotated[str, typer.Option(help="until (RFC 3339 or now)")] = "now",
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Incident KPIs (MTTA, MTTR, counts, SLA rates ...) per service, team or person, from
    the insight service (GET /analytics/incidents).

    Example: tocsin report --group-by team --since 7d
    """
    if group_by not in REPORT_GROUPS:
        raise CliError(
            f"--group-by {group_by!r}: expected one of {', '.join(REPORT_GROUPS)}", Exit.USAGE
        )
    moment = now()
    query = {
        "group_by": group_by,
        "since": rfc3339(parse_time_arg(since, moment, "--since")),
        "until": rfc3339(parse_time_arg(until, moment, "--until")),
    }
    with state(ctx).client() as api:
        answer = api.get("/analytics/incidents", query)
    rows = report_rows(answer)
    if output is OutputFormat.table:
        out(
            render(
                rows,
                output,
                report_columns(rows),
                empty="no incidents in that range",
                width=width(),
            )
        )
    else:
        out(render_data(answer, output))
