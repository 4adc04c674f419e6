"""Status updates and the public status page through the whole stack: an alert opens an
incident on sp-svc; a responder posts status updates over REST (a viewer may not); they are
on the incident's timeline, and the public page (JSON and, in the real headless browser,
HTML) shows the component's state, the public title and messages — and nothing internal."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.integration.api_client import assert_problem, incident_titled, trigger, user_client
from tests.integration.console_browser import (
    axe_violations,
    describe,
    flash,
    open_browser,
    post_form,
    run,
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


async def test_a_high_urgency_incident_without_public_update_reminds_its_responders(
    stack: Stack,
) -> None:
    """status_page.update_reminders.high is 4 s in this stack."""
    title = f"sp reminder {uuid.uuid4().hex[:8]}"
    await trigger(stack, title, key=KEY)
    async with await user_client(stack, "sp-resp") as api:
        incident = await incident_titled(api, title, service_id="sp-svc")
        deadline = time.monotonic() + 30
        while not (due := await entries_of(api, incident["id"], "status_update_due")):
            assert time.monotonic() < deadline, "no reminder within 30 s"
            await asyncio.sleep(0.5)
        assert due[0]["actor"] == "escalation" and "no public status update" in due[0]["message"]
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
        await asyncio.sleep(1)  # a reminder already in flight may still land
        settled = len(await entries_of(api, incident["id"], "status_update_due"))
        await asyncio.sleep(10)  # two and a half cadences
        assert len(await entries_of(api, incident["id"], "status_update_due")) == settled
        assert (await api.post(f"/incidents/{incident['id']}/resolve")).status_code == 202
