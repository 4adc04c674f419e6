"""On call and schedules through the REST API against the real services: who is on call
(per schedule, policy, user), the rendered final schedule, overrides created and deleted
as the caller, and a calendar feed whose secret URL works without a credential."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.api_client import assert_problem, client, user_client
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def test_who_is_on_call(stack: Stack) -> None:
    async with await user_client(stack, "api-viewer") as viewer:
        by_schedule = (await viewer.get("/oncalls", params={"schedule_id": "api-rota"})).json()
        (entry,) = by_schedule["oncalls"]
        assert entry["user_id"] in ("api-resp", "api-mgr") and entry["schedule_id"] == "api-rota"
        by_policy = (
            await viewer.get("/oncalls", params={"escalation_policy_id": "api-policy"})
        ).json()["oncalls"]
        assert [
            (e["user_id"], e["escalation_level"], e["escalation_policy_id"]) for e in by_policy
        ] == [(entry["user_id"], 1, "api-policy")]
        mine = (await viewer.get("/oncalls", params={"user_id": entry["user_id"]})).json()
        assert {e["escalation_policy_id"] for e in mine["oncalls"]} == {"api-policy"}
        nobody = (await viewer.get("/oncalls", params={"user_id": "api-out"})).json()
        assert nobody["oncalls"] == []
        assert_problem(await viewer.get("/oncalls", params={"schedule_id": "nope"}), 404)
        both = await viewer.get(
            "/oncalls", params={"schedule_id": "api-rota", "escalation_policy_id": "api-policy"}
        )
        assert_problem(both, 400, "schedule_id")


async def test_schedules_render_and_overrides(stack: Stack) -> None:
    start = datetime(2031, 3, 3, tzinfo=UTC)
    async with await user_client(stack, "api-resp") as ana:
        listed = (await ana.get("/schedules")).json()["schedules"]
        assert "api-rota" in [s["id"] for s in listed]
        rendered = (
            await ana.get(
                "/schedules/api-rota",
                params={"since": iso(start), "until": iso(start + timedelta(days=2))},
            )
        ).json()
        assert rendered["time_zone"] == "UTC"
        spans = rendered["final_schedule"]
        assert len(spans) == 2 and spans[0]["user_ids"] != spans[1]["user_ids"]
        # Its one layer (unnamed, unrestricted) alone is the final schedule; no override yet.
        assert rendered["layers"] == [{"name": "", "spans": spans}]
        assert rendered["overrides"] == []

        # Ana takes the second day herself: a responder may override for herself.
        body = {
            "user_id": "api-resp",
            "start": iso(start + timedelta(days=1)),
            "end": iso(start + timedelta(days=2)),
        }
        created = await ana.post("/schedules/api-rota/overrides", json=body)
        assert created.status_code == 201, created.text
        override = created.json()
        assert override["created_by"] == "api-resp" and override["id"]
        shown = (
            await ana.get(
                "/schedules/api-rota",
                params={"since": iso(start), "until": iso(start + timedelta(days=2))},
            )
        ).json()
        after = shown["final_schedule"]
        assert after[-1]["user_ids"] == ["api-resp"]
        # escalation lists the override with the range; the layer is unchanged by it.
        assert shown["overrides"] == [override] and not override["from_config"]
        assert shown["layers"] == rendered["layers"]
        outside = (
            await ana.get(
                "/schedules/api-rota",
                params={"since": iso(start), "until": iso(start + timedelta(days=1))},
            )
        ).json()
        assert outside["overrides"] == []  # it starts where this range ends
        # ... but not for someone else, nor with the end first.
        assert_problem(
            await ana.post("/schedules/api-rota/overrides", json={**body, "user_id": "api-mgr"}),
            403,
        )
        backwards = {**body, "start": body["end"], "end": body["start"]}
        assert_problem(await ana.post("/schedules/api-rota/overrides", json=backwards), 400, "end")
        assert_problem(
            await ana.post("/schedules/api-rota/overrides", json={"user_id": "x"}), 400, "start"
        )
        deleted = await ana.delete(f"/schedules/api-rota/overrides/{override['id']}")
        assert deleted.status_code == 204
    async with client(stack) as admin:
        assert_problem(await admin.delete(f"/schedules/api-rota/overrides/{override['id']}"), 404)
    async with await user_client(stack, "api-resp") as ana:
        assert_problem(
            await ana.get("/schedules/api-rota", params={"since": "2031-01-01T00:00"}), 400, "since"
        )


async def test_a_calendar_feed_needs_only_its_secret_url(stack: Stack) -> None:
    async with await user_client(stack, "api-resp") as ana:
        made = await ana.post("/schedules/api-rota/ical_url")
        assert made.status_code == 201, made.text
        url = made.json()["url"]
        assert url.startswith(stack.api_url + "/api/v1/calendars/tcal_") and url.endswith(".ics")
        assert_problem(await ana.post("/schedules/nope/ical_url"), 404)
    async with await user_client(stack, "api-out") as outsider:
        assert_problem(await outsider.post("/schedules/api-rota/ical_url"), 403)
    async with httpx.AsyncClient() as anonymous:
        feed = await anonymous.get(url)
        assert feed.status_code == 200, feed.text
        assert feed.headers["content-type"].startswith("text/calendar")
        assert feed.text.startswith("BEGIN:VCALENDAR") and "BEGIN:VEVENT" in feed.text
        guessed = url[: -len(".ics") - 4] + "xxxx.ics"
        assert_problem(await anonymous.get(guessed), 404)
    # The secret is kept hashed: Redis never holds the token itself.
    from redis.asyncio import Redis

    redis = Redis.from_url(stack.redis_url)
    try:
        stored = await redis.hgetall("tocsin:api:ical")
    finally:
        await redis.aclose()
    token = url.rsplit("/", 1)[1].removesuffix(".ics")
    assert stored and all(token.encode() not in k + v for k, v in stored.items())


async def test_admin_reads_every_schedule(stack: Stack) -> None:
    async with client(stack) as admin:
        assert "api-rota" in [s["id"] for s in (await admin.get("/schedules")).json()["schedules"]]


async def test_a_schedule_s_layers_and_overrides_are_read_only_by_who_may_read_it(
    stack: Stack,
) -> None:
    # api-out is on another team: escalation refuses the render (policy: schedule.read),
    # so neither its layers nor its overrides leave it.
    async with await user_client(stack, "api-out") as outsider:
        assert_problem(await outsider.get("/schedules/api-rota"), 403)
        assert "api-rota" not in [
            s["id"] for s in (await outsider.get("/schedules")).json()["schedules"]
        ]
