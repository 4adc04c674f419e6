"""The api's reports from insight against the whole stack: an incident driven through
ingest, correlation and escalation (acknowledged after a known delay, resolved) shows up in
GET /analytics/incidents with the right figures; another team's viewer cannot read them;
the review draft is the incident's Markdown; bad queries are 400s naming the field."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.api_client import (
    assert_problem,
    client,
    incident_titled,
    trigger,
    until_status,
    user_client,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

KEY = "itanlsvc000000000000000000000001"  # stack_config/72-api-analytics.yaml's anl-svc
ACK_DELAY_S = 3.0


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _resolved_incident(stack: Stack, title: str = "") -> dict[str, Any]:
    """An anl-svc incident acknowledged by anl-resp ACK_DELAY_S after it opened, then
    resolved; as the api shows it once resolved."""
    title = await trigger(stack, title or f"analytics test {uuid.uuid4().hex[:8]}", key=KEY)
    async with await user_client(stack, "anl-resp") as api:
        incident = await incident_titled(api, title, "anl-svc")
        created = _time(incident["created_at"])
        wait = ACK_DELAY_S - (datetime.now(created.tzinfo) - created).total_seconds()
        await asyncio.sleep(max(0.0, wait))
        acked = await api.post(f"/incidents/{incident['id']}/acknowledge")
        assert acked.status_code == 202, acked.text
        await until_status(api, incident["id"], "acknowledged")
        resolved = await api.post(f"/incidents/{incident['id']}/resolve")
        assert resolved.status_code == 202, resolved.text
        return await until_status(api, incident["id"], "resolved")


async def _report(api: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows once insight has a resolved incident in them (it follows the
    event log: a moment behind)."""
    deadline = time.monotonic() + 30
    while True:
        reply = await api.get("/analytics/incidents", params=params)
        assert reply.status_code == 200, reply.text
        rows: list[dict[str, Any]] = reply.json()["data"]
        if rows and all(r["seconds_to_resolve"]["count"] for r in rows):
            return rows
        assert time.monotonic() < deadline, f"not in the report after 30 s: {reply.json()}"
        await asyncio.sleep(0.3)


async def test_a_driven_incident_shows_up_with_its_time_to_acknowledge(stack: Stack) -> None:
    incident = await _resolved_incident(stack)
    created = _time(incident["created_at"])
    # This incident alone (a rerun on the same Kafka and Postgres finds the earlier ones).
    params = {
        "service_id": "anl-svc",
        "since": created.isoformat(),
        "until": (created + timedelta(seconds=1)).isoformat(),
        "group_by": ["service", "user"],
    }
    async with await user_client(stack, "anl-viewer") as api:
        (row,) = await _report(api, params)
        assert (row["service_id"], row["user_id"]) == ("anl-svc", "anl-resp")
        assert row["total_incident_count"] == 1
        ack = row["seconds_to_first_ack"]
        assert ack["count"] == 1
        # The ack was sent ACK_DELAY_S after creation; it lands a moment later.
        assert ACK_DELAY_S - 0.5 <= ack["mean"] <= ACK_DELAY_S + 3, ack
        assert ack["p50"] == ack["p90"] == ack["max"] == ack["mean"]
        resolve = row["seconds_to_resolve"]
        assert resolve["count"] == 1 and resolve["mean"] >= ack["mean"]
        assert row["escalation_rate"] == 0 and row["auto_resolved_share"] == 0

        # By day in a time zone: the period starts at the local midnight before the incident.
        daily = await api.get(
            "/analytics/incidents",
            params={**params, "group_by": [], "period": "day", "time_zone": "Asia/Tokyo"},
        )
        (day,) = daily.json()["data"]
        assert daily.json()["aggregate_unit"] == "day"
        start = _time(day["period_start"])
        assert timedelta(0) <= created - start < timedelta(days=1)
        assert (start.hour, start.minute) == (15, 0)  # 00:00 in Tokyo is 15:00 UTC
        assert day["total_incident_count"] == 1

        series = await api.get(
            "/analytics/timeseries",
            params={
                "service_id": "anl-svc",
                "metric": "incident_count",
                "since": params["since"],
                "until": params["until"],
            },
        )
        assert series.status_code == 200, series.text
        assert [p["value"] for p in series.json()["points"]] == [1.0]

        breaches = await api.get("/analytics/breaches", params={"service_id": "anl-svc"})
        assert breaches.status_code == 200, breaches.text
        problems = await api.get("/analytics/problems", params={"team_id": "anl-team"})
        assert problems.status_code == 200 and "problems" in problems.json()

        # The overview of this incident alone: its alert is the service's noise; its policy
        # paged nobody (level one waits an hour), so nobody was interrupted.
        overview = await api.get(
            "/analytics/overview", params={**params, "group_by": []}
        )  # not Overview's
        assert overview.status_code == 200, overview.text
        body = overview.json()
        assert sum(n["alerts"] for n in body["top_sources"]) == 1, body
        assert body["interruptions"] == [] and body["definition_version"]
        assert body["change_failure"]["total_changes"] == 0
        assert_problem(await api.get("/analytics/overview", params={"top_sources": 101}), 400)


async def test_another_teams_viewer_cannot_read_this_teams_report(stack: Stack) -> None:
    async with await user_client(stack, "api-viewer") as api:  # viewer of api-team only
        for params in ({"team_id": "anl-team"}, {"service_id": "anl-svc"}, {}):
            reply = await api.get("/analytics/incidents", params=params)
            assert_problem(reply, 403)
        assert_problem(await api.get("/analytics/problems", params={"team_id": "anl-team"}), 403)
        for params in ({"team_id": "anl-team"}, {"service_id": "anl-svc"}):
            assert_problem(await api.get("/analytics/overview", params=params), 403)
        # Their own team's figures they may read.
        own = await api.get("/analytics/incidents", params={"team_id": "api-team"})
        assert own.status_code == 200, own.text
    async with client(stack, "") as anonymous:
        assert_problem(await anonymous.get("/analytics/incidents"), 401)


async def test_the_review_draft_is_the_incidents_markdown(stack: Stack) -> None:
    incident = await _resolved_incident(stack)
    async with await user_client(stack, "anl-viewer") as api:
        deadline = time.monotonic() + 30
        while True:
            reply = await api.get(f"/incidents/{incident['id']}/review_draft")
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/markdown")
        assert reply.text.startswith(f"# Post-incident review: {incident['title']}")
        assert_problem(await api.get("/incidents/no-such-incident/review_draft"), 404)
    async with await user_client(stack, "api-viewer") as outsider:
        # Another team's incident reads as unknown: ids cannot be probed.
        assert_problem(await outsider.get(f"/incidents/{incident['id']}/review_draft"), 404)


async def test_bad_queries_are_400s_naming_the_field(stack: Stack) -> None:
    async with client(stack) as api:
        assert_problem(
            await api.get("/analytics/incidents", params={"group_by": "planet"}), 400, "group_by[0]"
        )
        assert_problem(
            await api.get("/analytics/incidents", params={"period": "fortnight"}), 400, "period"
        )
        body = assert_problem(
            await api.get("/analytics/incidents", params={"time_zone": "Mars/Olympus"}),
            400,
            "time_zone",
        )
        assert "Mars/Olympus" in body["detail"]
        assert_problem(
            await api.get("/analytics/incidents", params={"since": "2026-01-01T00:00:00"}),
            400,
            "since",
        )
        assert_problem(
            await api.get("/analytics/timeseries", params={"metric": "happiness"}), 400, "metric"
        )
        assert_problem(await api.get("/analytics/breaches", params={"limit": 0}), 400, "limit")
