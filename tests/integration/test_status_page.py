"""Status updates and the public status page through the whole stack: an alert opens an
incident on sp-svc; a responder posts status updates over REST (a viewer may not); they are
on the incident's timeline, and the public page (JSON and, in the real headless browser,
HTML) shows the component's state, the public title and messages — and nothing internal.
The reminder reaches the responder (the recording peer); runtime maintenance windows and
a hand-set impact reach the page; the page is photographed (TOCSIN_SCREENSHOTS_DIR)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from tocsin.v1 import silence_service_pb2, silence_service_pb2_grpc

from tests.integration.api_client import (
    assert_problem,
    client,
    incident_titled,
    trigger,
    user_client,
)
from tests.integration.console_browser import (
    DESKTOP,
    PHONE,
    axe_violations,
    describe,
    emulate,
    flash,
    open_browser,
    post_form,
    run,
    screenshot,
    sign_in_with_token,
    visible,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

KEY = "itspsvc0000000000000000000000001"  # stack_config/85-status-page.yaml's sp-svc


TOCSIN = str(Path(sys.executable).parent / "tocsin")  # the CLI make venv installs


async def cli(stack: Stack, token: str, *args: str) -> Any:
    """The CLI's JSON answer (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        TOCSIN,
        *args,
        env={**os.environ, "TOCSIN_API_URL": stack.api_url, "TOCSIN_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from open_browser()


async def summary_when(stack: Stack, ready: Any, timeout: float = 40) -> dict[str, Any]:
    """The public summary once ``ready(summary)`` holds (the page is cached 10 s)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        while True:
            reply = await http.get("/status/api/v2/summary.json")
            assert reply.status_code == 200, reply.text
            body: dict[str, Any] = reply.json()
            if ready(body):
                return body
            assert time.monotonic() < deadline, f"the page never got there: {body}"
            await asyncio.sleep(1)


async def test_a_status_update_is_on_the_timeline_and_on_the_public_page(
    stack: Stack, browser: WebDriver
) -> None:
    internal_title = f"OOMKilled sp-pod {uuid.uuid4().hex[:8]}"
    await trigger(stack, internal_title, key=KEY)
    public_title = f"Checkout is slow {uuid.uuid4().hex[:6]}"
    async with await user_client(stack, "sp-resp") as api:
        incident = await incident_titled(api, internal_title, service_id="sp-svc")
        route = f"/incidents/{incident['id']}/status_updates"

        # The first update needs a public title; a status must be Statuspage's.
        assert_problem(
            await api.post(route, json={"status": "investigating", "message": "Looking."}),
            400,
            "public_title",
        )
        assert_problem(await api.post(route, json={"status": "fixed", "message": "x"}), 400)

        first = await api.post(
            route,
            json={
                "status": "investigating",
                "message": "Checkout is slow. Ask ops@example.com or 10.1.2.3 for details.",
                "public_title": public_title,
            },
        )
        assert first.status_code == 202, first.text
        assert first.json()["redactions"] == ["email", "address"]
        assert "ops@example.com" not in first.json()["message"]

        # The second through the CLI, as a responder would from a terminal.
        token, _ = await stack.token_for("sp-resp")
        second = await cli(
            stack,
            token,
            "incidents",
            "status-update",
            incident["id"],
            "--status",
            "identified",
            "-m",
            "A <b>fix</b> <script>x()</script> is out.",
            "-o",
            "json",
        )
        assert second["status"] == "identified" and second["redactions"] == []

        # On the incident's timeline, by the responder.
        deadline = time.monotonic() + 30
        while True:
            entries = (await api.get(f"/incidents/{incident['id']}/log_entries")).json()
            updates = [e for e in entries["log_entries"] if e["type"] == "status_updated"]
            if len(updates) == 2:
                break
            assert time.monotonic() < deadline, entries
            await asyncio.sleep(0.5)
        assert {e["actor"] for e in updates} == {"sp-resp"}
        assert "identified" in updates[1]["message"]

    # A viewer of the team may not post.
    async with await user_client(stack, "sp-viewer") as viewer:
        denied = await viewer.post(route, json={"status": "monitoring", "message": "Watching."})
        assert_problem(denied, 403)

    def shows_it(body: dict[str, Any]) -> bool:
        uptime_known = all(c["uptime_percent"] is not None for c in body["components"])
        return uptime_known and any(
            i["name"] == public_title and len(i["incident_updates"]) == 2 for i in body["incidents"]
        )

    body = await summary_when(stack, shows_it)
    (component,) = [c for c in body["components"] if c["name"] == "Storefront"]
    assert component["status"] == "partial_outage"  # open high-urgency incident
    # From insight's Uptime over 90 days: no incident of sp-svc carried an impact label.
    assert component["uptime_percent"] == 100.0
    assert body["status"]["indicator"] == "major"
    (shown,) = [i for i in body["incidents"] if i["name"] == public_title]
    assert shown["status"] == "identified" and shown["components"] == ["Storefront"]
    assert [u["status"] for u in shown["incident_updates"]] == ["identified", "investigating"]
    dumped = str(body)
    for internal in (incident["id"], internal_title, "sp-svc", "sp-resp", "ops@example.com"):
        assert internal not in dumped, internal

    # The HTML page, in the real browser: no login, the update's text escaped and inert.
    def read_page() -> dict[str, Any]:
        browser.get(f"{stack.api_url}/status")
        visible(browser, f"#incident-{shown['id']}")
        article = browser.find_element(By.CSS_SELECTOR, f"#incident-{shown['id']}")
        return {
            "title": article.find_element(By.CSS_SELECTOR, "h3").text,
            "messages": [m.text for m in article.find_elements(By.CSS_SELECTOR, ".message")],
            "overall": browser.find_element(By.ID, "overall").get_attribute("data-state"),
            "scripts": len(browser.find_elements(By.CSS_SELECTOR, "script, b")),
            "component": browser.find_element(By.CSS_SELECTOR, ".component").get_attribute(
                "data-state"
            ),
        }

    # A third update through the console's form on the incident's page.
    def post_in_console() -> str:
        sign_in_with_token(browser, stack.api_url, token, f"/console/incidents/{incident['id']}")
        visible(browser, "#status-update-form")
        Select(browser.find_element(By.ID, "status-update-status")).select_by_visible_text(
            "monitoring"
        )
        browser.find_element(By.ID, "status-update-message").send_keys(
            "A fix is out; we are watching checkout."
        )
        post_form(browser, "#status-update-form button[type=submit]")
        return flash(browser)

    assert "status update posted (monitoring)" in await run(post_in_console)

    def monitored(body: dict[str, Any]) -> bool:
        return any(
            i["name"] == public_title and i["status"] == "monitoring" for i in body["incidents"]
        )

    await summary_when(stack, monitored)

    seen = await run(read_page)
    assert seen["title"] == public_title
    assert seen["messages"][0] == "A fix is out; we are watching checkout."
    assert seen["messages"][1] == "A <b>fix</b> <script>x()</script> is out."
    assert "[redacted]" in seen["messages"][2]
    assert not await run(axe_violations, browser), describe(await run(axe_violations, browser))
    assert seen["scripts"] == 0  # shown as text, not markup
    assert seen["overall"] == "partial_outage"
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        page = await http.get("/status")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "public, max-age=10"
    # A responder overrides the component (kept in Redis); removing it derives it again.
    async with await user_client(stack, "sp-resp") as api:
        override = "/status_page/components/sp-web/override"
        put = await api.put(override, json={"state": "major_outage"})
        assert put.status_code == 200, put.text
        assert put.json()["actor"] == "sp-resp"
        async with await user_client(stack, "sp-viewer") as viewer:
            assert_problem(await viewer.put(override, json={"state": "operational"}), 403)

        def storefront(state: str) -> Any:
            return lambda body: any(
                c["name"] == "Storefront" and c["status"] == state for c in body["components"]
            )

        await summary_when(stack, storefront("major_outage"))
        assert (await api.delete(override)).status_code == 204
        await summary_when(stack, storefront("partial_outage"))
        assert (await api.post(f"/incidents/{incident['id']}/resolve")).status_code == 202


async def entries_of(api: httpx.AsyncClient, incident_id: str, kind: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/incidents/{incident_id}/log_entries")
    assert reply.status_code == 200, reply.text
    return [e for e in reply.json()["log_entries"] if e["type"] == kind]


def reminders_for(stack: Stack, incident_id: str) -> list[dict[str, Any]]:
    """The reminders the recording peer received at sp-resp's webhook for the incident."""
    found = []
    for request in list(stack.pages.requests):
        if request.path != "/sp-resp":
            continue
        body = request.json()
        if body.get("event") == "incident.reminder" and body["incident"]["id"] == incident_id:
            found.append(body)
    return found


async def reminded(stack: Stack, incident_id: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(reminders_for(stack, incident_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} reminders in {timeout}s"
        await asyncio.sleep(0.5)


async def test_a_high_urgency_incident_without_public_update_reminds_its_responders(
    stack: Stack,
) -> None:
    """status_page.update_reminders.high is 4 s in this stack. Each reminder is a timeline
    entry and a message to the responder the run paged (sp-resp, by its webhook: the
    stack's recording peer), once per reminder, an escalation crash in between included."""
    title = f"sp reminder {uuid.uuid4().hex[:8]}"
    await trigger(stack, title, key=KEY)
    async with await user_client(stack, "sp-resp") as api:
        incident = await incident_titled(api, title, service_id="sp-svc")
        deadline = time.monotonic() + 30
        while not (due := await entries_of(api, incident["id"], "status_update_due")):
            assert time.monotonic() < deadline, "no reminder within 30 s"
            await asyncio.sleep(0.5)
        assert due[0]["actor"] == "escalation" and "no public status update" in due[0]["message"]
        assert due[0]["message"].endswith("reminded sp-resp")

        # The responder gets it: what it says, and the link to the incident in the console.
        await reminded(stack, incident["id"], 1)
        first = reminders_for(stack, incident["id"])[0]
        assert first["user"]["id"] == "sp-resp"
        assert first["reminder"] == {
            "kind": "status_update_due",
            "text": "No public status update has been posted for 4 seconds: "
            "post one for the status page.",
            "incident_url": f"{stack.api_url}/console/incidents/{incident['id']}",
        }
        assert first["links"]["incident"] == first["reminder"]["incident_url"]
        assert "No public status update has been posted for 4 seconds" in first["text"]

        # Escalation crashes while reminders are due; after its restart they go on, and
        # none reaches the responder twice (its key derives from the firing).
        before = len(reminders_for(stack, incident["id"]))
        await stack.restart("escalation")
        await reminded(stack, incident["id"], before + 2)

        # Resolved on the page: no more reminders.
        posted = await api.post(
            f"/incidents/{incident['id']}/status_updates",
            json={"status": "resolved", "message": "All good.", "public_title": "Blip"},
        )
        assert posted.status_code == 202, posted.text
        deadline = time.monotonic() + 30
        while not await entries_of(api, incident["id"], "status_updated"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a reminder already in flight may still land
        settled = len(await entries_of(api, incident["id"], "status_update_due"))
        await asyncio.sleep(10)  # two and a half cadences
        entries = await entries_of(api, incident["id"], "status_update_due")
        assert len(entries) == settled
        sent = reminders_for(stack, incident["id"])
        keys = [r["idempotency_key"] for r in sent]
        assert len(keys) == len(set(keys)), keys  # nobody reminded twice of one reminder
        assert len(sent) == settled  # one message per reminder on the timeline
        notified = [
            e
            for e in await entries_of(api, incident["id"], "notified")
            if "reminder: status_update_due" in e["message"]
        ]
        assert len(notified) == settled
        assert (await api.post(f"/incidents/{incident['id']}/resolve")).status_code == 202


async def test_runtime_maintenance_windows_are_on_the_public_page_by_their_public_title(
    stack: Stack,
) -> None:
    tag = uuid.uuid4().hex[:6]
    internal = f"rotate the pg primary, ticket OPS-{tag}"
    public = f"Checkout upgrade {tag}"
    async with client(stack) as admin:
        # In progress now, with a public title (cleaned like every public text).
        now = await admin.post(
            "/maintenance_windows",
            json={
                "service_id": "sp-svc",
                "duration_seconds": 600,
                "description": internal,
                "public_title": f"{public}, questions to ops@example.com",
            },
        )
        assert now.status_code == 201, now.text
        assert now.json()["public_title"] == f"{public}, questions to [redacted]"
        assert now.json()["redactions"] == ["email"]
        # Tomorrow, without one: the page says "Scheduled maintenance", nothing internal.
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        later = await admin.post(
            "/maintenance_windows",
            json={
                "service_id": "sp-svc",
                "starts_at": tomorrow,
                "duration_seconds": 3600,
                "description": f"{internal} (part two)",
            },
        )
        assert later.status_code == 201, later.text
        assert later.json()["public_title"] is None
        bad = await admin.post(
            "/maintenance_windows",
            json={"service_id": "sp-svc", "duration_seconds": 60, "public_title": "\u200b"},
        )
        assert_problem(bad, 400, "public_title")
        windows = (await admin.get("/maintenance_windows", params={"service_id": "sp-svc"})).json()
        assert {w["public_title"] for w in windows["maintenance_windows"]} >= {
            f"{public}, questions to [redacted]",
            None,
        }
        try:

            def shown(body: dict[str, Any]) -> bool:
                names = [m["name"] for m in body["scheduled_maintenances"]]
                storefront = [c for c in body["components"] if c["name"] == "Storefront"]
                return (
                    f"{public}, questions to [redacted]" in names
                    and "Scheduled maintenance" in names
                    and storefront[0]["status"] == "under_maintenance"
                )

            body = await summary_when(stack, shown)
            (in_progress,) = [
                m for m in body["scheduled_maintenances"] if m["name"].startswith(public)
            ]
            assert in_progress["status"] == "in_progress"
            assert in_progress["components"] == ["Storefront"]
            upcoming = [
                m for m in body["scheduled_maintenances"] if m["name"] == "Scheduled maintenance"
            ]
            assert [m["status"] for m in upcoming] == ["scheduled"]
            assert body["status"]["indicator"] == "maintenance"
            dumped = json.dumps(body)
            for value in (internal, now.json()["id"], later.json()["id"], "sp-svc", "ops@"):
                assert value not in dumped, value
        finally:
            for made in (now, later):
                ended = await admin.delete(f"/maintenance_windows/{made.json()['id']}")
                assert ended.status_code == 204
        await summary_when(
            stack,
            lambda body: (
                not any(m["name"].startswith(public) for m in body["scheduled_maintenances"])
            ),
        )


async def test_a_responder_sets_an_incidents_public_impact_and_clears_it(stack: Stack) -> None:
    title = f"sp impact {uuid.uuid4().hex[:8]}"
    public_title = f"Checkout errors {uuid.uuid4().hex[:6]}"
    await trigger(stack, title, key=KEY)
    async with await user_client(stack, "sp-resp") as api:
        incident = await incident_titled(api, title, service_id="sp-svc")
        route = f"/incidents/{incident['id']}/impact"
        posted = await api.post(
            f"/incidents/{incident['id']}/status_updates",
            json={"status": "investigating", "message": "Looking.", "public_title": public_title},
        )
        assert posted.status_code == 202, posted.text
        async with await user_client(stack, "sp-viewer") as viewer:
            assert_problem(await viewer.put(route, json={"impact": "operational"}), 403)
        put = await api.put(route, json={"impact": "major_outage"})
        assert put.status_code == 202, put.text
        assert put.json()["impact"] == "major_outage"

        def impact_is(state: str) -> Any:
            def ready(body: dict[str, Any]) -> bool:
                mine = [i for i in body["incidents"] if i["name"] == public_title]
                storefront = [c for c in body["components"] if c["name"] == "Storefront"]
                return (
                    bool(mine) and mine[0]["impact"] == state and (storefront[0]["status"] == state)
                )

            return ready

        await summary_when(stack, impact_is("major_outage"))
        assert (await api.get(f"/incidents/{incident['id']}")).json()["impact"] == "major_outage"
        (entry,) = await entries_of(api, incident["id"], "impact_changed")
        assert entry["actor"] == "sp-resp" and "major_outage" in entry["message"]

        # Cleared from the CLI: it follows the urgency again (high: partial_outage).
        token, _ = await stack.token_for("sp-resp")
        cleared = await cli(
            stack, token, "incidents", "impact", incident["id"], "--clear", "-o", "json"
        )
        assert cleared["impact"] is None
        await summary_when(stack, impact_is("partial_outage"))
        assert (await api.get(f"/incidents/{incident['id']}")).json()["impact"] is None
        assert len(await entries_of(api, incident["id"], "impact_changed")) == 2
        assert (await api.post(f"/incidents/{incident['id']}/resolve")).status_code == 202

    # Audited: both changes by the responder, and the viewer's refusal.
    async with client(stack) as admin:
        deadline = time.monotonic() + 30
        while True:
            records = (
                await admin.get(
                    "/audit_records",
                    params={"action": "incident.set_impact", "resource_id": incident["id"]},
                )
            ).json()["audit_records"]
            if len(records) >= 3:
                break
            assert time.monotonic() < deadline, records
            await asyncio.sleep(0.5)
        assert sorted((r["actor"], r["allowed"]) for r in records) == [
            ("sp-resp", True),
            ("sp-resp", True),
            ("sp-viewer", False),
        ]


async def test_the_public_page_in_the_browser_is_accessible_and_photographed(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    """The page as the public sees it (docs/status-page.md's screenshots: `make screenshots`
    writes them to docs/images): an incident with updates and a hand-set impact, and a
    maintenance window planned for tomorrow, at desktop and phone width, light and dark."""
    folder = Path(os.environ.get("TOCSIN_SCREENSHOTS_DIR") or tmp_path)
    title = f"sp shot {uuid.uuid4().hex[:8]}"
    await trigger(stack, title, key=KEY)
    async with await user_client(stack, "sp-resp") as api:
        incident = await incident_titled(api, title, service_id="sp-svc")
        route = f"/incidents/{incident['id']}/status_updates"
        for status, message in (
            ("investigating", "Some card payments at checkout fail. We are looking into it."),
            (
                "identified",
                "A configuration change to the payment gateway is the cause; "
                "we are rolling it back.",
            ),
        ):
            posted = await api.post(
                route,
                json={"status": status, "message": message, "public_title": "Checkout errors"},
            )
            assert posted.status_code == 202, posted.text
            await asyncio.sleep(0.2)  # each after the one before
        put = await api.put(f"/incidents/{incident['id']}/impact", json={"impact": "major_outage"})
        assert put.status_code == 202, put.text
    async with client(stack) as admin:
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(
            hour=6, minute=0, second=0, microsecond=0
        )
        window = await admin.post(
            "/maintenance_windows",
            json={
                "service_id": "sp-svc",
                "starts_at": tomorrow.isoformat(),
                "duration_seconds": 7200,
                "description": "rotate the pg primary",
                "public_title": "Checkout database upgrade",
            },
        )
        assert window.status_code == 201, window.text
    try:

        def ready(body: dict[str, Any]) -> bool:
            return any(
                i["name"] == "Checkout errors" and i["impact"] == "major_outage"
                for i in body["incidents"]
            ) and any(
                m["name"] == "Checkout database upgrade" for m in body["scheduled_maintenances"]
            )

        await summary_when(stack, ready)

        def photograph() -> tuple[list[str], list[str]]:
            found: list[str] = []
            shots: list[str] = []
            for dark in (False, True):
                scheme = "dark" if dark else "light"
                for size, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
                    emulate(browser, size, dark)
                    browser.get(f"{stack.api_url}/status")
                    visible(browser, "#overall")
                    wide = browser.execute_script("return document.documentElement.scrollWidth")
                    assert wide <= size[0] + 1, f"{wide}px wide at {width} width"
                    bad = axe_violations(browser)
                    if bad:
                        found.append(f"status page ({width}, {scheme}):\n{describe(bad)}")
                    shots.append(screenshot(browser, folder, f"status-page {width} {scheme}").name)
            emulate(browser, DESKTOP, dark=False)
            return found, shots

        violations, shots = await run(photograph)
        assert not violations, "\n\n".join(violations)
        assert sorted(shots) == [
            "status-page-desktop-dark.png",
            "status-page-desktop-light.png",
            "status-page-phone-dark.png",
            "status-page-phone-light.png",
        ]
    finally:
        async with client(stack) as admin:
            await admin.delete(f"/maintenance_windows/{window.json()['id']}")
        async with await user_client(stack, "sp-resp") as api:
            await api.post(f"/incidents/{incident['id']}/resolve")


async def test_correlation_gives_public_titles_to_maintenance_windows_only(stack: Stack) -> None:
    """Straight to correlation's SilenceService (the REST silence has no public title): a
    public title on a silence that is not a maintenance window is refused, naming it; the
    page's StatusMaintenance read is for status_page.read only (a viewer of a team has no
    such role on the page's resource; the api's service credential does)."""
    stub = silence_service_pb2_grpc.SilenceServiceStub(stack.channel("correlation"))
    silence = silence_service_pb2.Silence(
        service_id="sp-svc",
        matchers=[
            silence_service_pb2.Matcher(
                name="alertname", value="x", op=silence_service_pb2.Matcher.OP_EQUAL
            )
        ],
        comment="a plain silence",
        public_title="Shown to the world?",
    )
    silence.ends_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateSilence(silence_service_pb2.CreateSilenceRequest(silence=silence))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "public_title: only a maintenance window has a public title" in str(
        refused.value.details()
    )
    token, _ = await stack.token_for("sp-viewer")
    as_viewer = silence_service_pb2_grpc.SilenceServiceStub(stack.channel("correlation", token))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await as_viewer.StatusMaintenance(silence_service_pb2.StatusMaintenanceRequest())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
