"""Silences and maintenance windows through the REST API against the real services
(Alertmanager matcher syntax), as the caller."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.api_client import (
    assert_problem,
    client,
    incident_titled,
    trigger,
    user_client,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


async def test_a_manager_silences_lists_and_expires(stack: Stack) -> None:
    async with await user_client(stack, "api-mgr") as mo:
        made = await mo.post(
            "/silences",
            json={
                "service_id": "api-svc",
                "matchers": ['alertname=~"Disk.*"', "severity!=info"],
                "duration_seconds": 3600,
                "comment": "disk work",
            },
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["matchers"] == ['alertname=~"Disk.*"', 'severity!="info"']
        assert silence["created_by"] == "api-mgr" and silence["service_id"] == "api-svc"
        listed = (await mo.get("/silences", params={"service_id": "api-svc"})).json()["silences"]
        assert silence["id"] in [s["id"] for s in listed]
        assert (await mo.delete(f"/silences/{silence['id']}")).status_code == 204
        active = (await mo.get("/silences")).json()["silences"]
        assert silence["id"] not in [s["id"] for s in active]
        expired = (await mo.get("/silences", params={"include_expired": "true"})).json()
        assert silence["id"] in [s["id"] for s in expired["silences"]]
        assert_problem(await mo.delete("/silences/no-such-silence"), 404)


async def test_bad_silences_name_the_field(stack: Stack) -> None:
    async with await user_client(stack, "api-mgr") as mo:
        bad = await mo.post(
            "/silences",
            json={"service_id": "api-svc", "matchers": ["ok=1", "=nope"], "duration_seconds": 60},
        )
        assert_problem(bad, 400, "matchers[1]")
        both = await mo.post(
            "/silences",
            json={
                "service_id": "api-svc",
                "matchers": ["a=b"],
                "duration_seconds": 60,
                "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
        )
        assert_problem(both, 400, "ends_at")
        past = await mo.post(
            "/silences",
            json={
                "service_id": "api-svc",
                "matchers": ["a=b"],
                "ends_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            },
        )
        assert_problem(past, 400, "ends_at")
        assert_problem(
            await mo.post("/silences", json={"matchers": [], "duration_seconds": 5}),
            400,
            "matchers",
        )
        # A silence of every service is for admins only.
        assert_problem(
            await mo.post("/silences", json={"matchers": ["a=b"], "duration_seconds": 60}), 403
        )
    async with await user_client(stack, "api-resp") as ana:
        denied = await ana.post(
            "/silences", json={"service_id": "api-svc", "matchers": ["a=b"], "duration_seconds": 60}
        )
        assert "manager" in assert_problem(denied, 403)["detail"]


async def test_maintenance_windows_planned_and_on_the_spot(stack: Stack) -> None:
    async with await user_client(stack, "api-mgr") as mo:
        made = await mo.post(
            "/maintenance_windows",
            json={"service_id": "api-svc", "duration_seconds": 600, "description": "db upgrade"},
        )
        assert made.status_code == 201, made.text
        window = made.json()
        assert window["source"] == "runtime" and window["description"] == "db upgrade"
        listed = (await mo.get("/maintenance_windows", params={"service_id": "api-svc"})).json()[
            "maintenance_windows"
        ]
        sources = {(w["source"], w["description"]) for w in listed}
        assert {("config", "planned upgrade"), ("runtime", "db upgrade")} <= sources
        # A plain silence is no maintenance window.
        silence = (
            await mo.post(
                "/silences",
                json={"service_id": "api-svc", "matchers": ["a=b"], "duration_seconds": 60},
            )
        ).json()
        assert_problem(await mo.delete(f"/maintenance_windows/{silence['id']}"), 404)
        assert (await mo.delete(f"/maintenance_windows/{window['id']}")).status_code == 204
        after = (await mo.get("/maintenance_windows")).json()["maintenance_windows"]
        assert window["id"] not in [w["id"] for w in after]
        # Ended, it stops suppressing once correlation reloads silences (every second): an
        # alert after that opens a paging incident. (Before this check, the next test's
        # alert on api-svc could land in that second, suppressed, and never trigger.)
        await asyncio.sleep(2)
        title = await trigger(stack)
        opened = await incident_titled(mo, title)
        assert opened["suppressed"] is False, opened
    async with client(stack) as admin:
        assert (await admin.get("/maintenance_windows")).status_code == 200
