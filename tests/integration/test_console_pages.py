"""Every console page in a real headless browser: reachable by its URL, zero serious or
critical axe-core 4 violations (light and dark, desktop and phone width), a screenshot at
desktop and phone width in light and dark, and the first page's time to usable.

Screenshots go to $TOCSIN_SCREENSHOTS_DIR when set (`make screenshots` sets docs/images),
else to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.api_client import API_KEY, client, incident_titled, trigger, until_status
from tests.integration.console_browser import (
    DESKTOP,
    PHONE,
    axe_violations,
    describe,
    emulate,
    open_browser,
    run,
    screenshot,
    sign_in_with_token,
    visible,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

# First page usable (DOMContentLoaded of the incident list, server render included): the
# issue's target on the dev stack.
FIRST_PAGE_MS = 1000


# The elements that stick out of the viewport (the message when a page is too wide).
WIDE_ELEMENTS = """
const out = [];
for (const e of document.querySelectorAll("body *")) {
  const r = e.getBoundingClientRect();
  if (r.right > arguments[0]) out.push(`${e.tagName}.${e.className}: ${Math.round(r.right)}`);
}
return out.slice(0, 10);
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from open_browser()


def pages(incident_id: str) -> dict[str, str]:
    return {
        "incidents": "/console/",
        "incident": f"/console/incidents/{incident_id}",
        "on call": "/console/oncall",
        "schedules": "/console/schedules",
        "schedule": "/console/schedules/api-cover",
        "policies": "/console/policies",
        "services": "/console/services",
        "silences": "/console/silences",
        "subscribers": "/console/subscribers",
        "me": "/console/me",
        "audit": "/console/audit",
        "insight": "/console/insight",
        "review draft": f"/console/incidents/{incident_id}/review",
    }


async def test_every_page_is_accessible_and_photographed(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    folder = Path(os.environ.get("TOCSIN_SCREENSHOTS_DIR") or tmp_path)
    # A person who is an admin (stack_config/50-access.yaml), so that Audit is there too,
    # and an incident of a service everyone here can see.
    token, _ = await stack.token_for("auth-admin")
    # A deploy of api-svc that failed, just before: the incident's probable cause.
    version = f"1.4.{uuid.uuid4().int % 1000}"
    async with httpx.AsyncClient() as http:
        deployed = await http.post(
            f"{stack.ingest_url}/v2/change/enqueue",
            json={
                "routing_key": API_KEY,
                "payload": {
                    "summary": f"Deploy checkout {version}",
                    "source": "argo",
                    "change_id": f"deploy-{version}",
                    "kind": "deploy",
                    "status": "failed",
                    "version": version,
                    "environment": "production",
                },
            },
        )
        assert deployed.status_code == 202, deployed.text
    title = await trigger(stack, "Checkout latency over SLO on api-svc")
    async with client(stack) as api:
        earlier = await incident_titled(api, title)
        await api.post(f"/incidents/{earlier['id']}/resolve")
        await until_status(api, earlier["id"], "resolved")
    # The same problem again, as a new incident: the incident page shows it recurring.
    again_key = f"{title} again {uuid.uuid4().hex[:6]}"  # new in every run on one stack
    async with httpx.AsyncClient() as http:
        again = await http.post(
            f"{stack.ingest_url}/v2/enqueue",
            json={
                "routing_key": API_KEY,
                "event_action": "trigger",
                "dedup_key": again_key,
                "payload": {"summary": title, "source": "checkout-7d9f", "severity": "critical"},
            },
        )
        assert again.status_code == 202, again.text
    async with client(stack) as api:
        deadline = time.monotonic() + 60
        while True:
            listed = await api.get(
                "/incidents", params={"service_id": "api-svc", "status": "triggered", "limit": 100}
            )
            found = [i for i in listed.json()["incidents"] if again_key in i["dedup_keys"]]
            if found:
                incident = found[0]
                break
            assert time.monotonic() < deadline, "the second incident did not open"
            await asyncio.sleep(0.2)
        note = await api.post(
            f"/incidents/{incident['id']}/notes", json={"content": "looking at the deploy"}
        )
        assert note.status_code == 202
    # An override on the calendar shown: tomorrow's early hours, which no layer covers.
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
        days=1
    )
    async with client(stack) as api:
        made = await api.post(
            "/schedules/api-cover/overrides",
            json={
                "user_id": "api-resp",
                "start": (tomorrow + timedelta(hours=2)).isoformat(),
                "end": (tomorrow + timedelta(hours=9)).isoformat(),
            },
        )
        assert made.status_code == 201, made.text
    routes = pages(incident["id"])

    def walk() -> tuple[list[str], list[str]]:
        found: list[str] = []
        shots: list[str] = []
        browser.delete_all_cookies()
        emulate(browser, DESKTOP, dark=False)
        browser.get(f"{stack.api_url}/console/")
        visible(browser, "#token")
        for dark in (False, True):
            emulate(browser, DESKTOP, dark)
            bad = axe_violations(browser)
            if bad:
                found.append(f"sign in ({'dark' if dark else 'light'}):\n{describe(bad)}")
            for size, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
                emulate(browser, size, dark)
                shots.append(
                    screenshot(
                        browser, folder, f"sign-in {width} {'dark' if dark else 'light'}"
                    ).name
                )
        sign_in_with_token(browser, stack.api_url, token, "/console/")
        for name, path in routes.items():
            for dark in (False, True):
                scheme = "dark" if dark else "light"
                emulate(browser, DESKTOP, dark)
                browser.get(f"{stack.api_url}{path}")
                heading = visible(browser, "main h1")
                assert heading.text, f"{name}: no heading"
                assert not browser.find_elements(By.CSS_SELECTOR, "main > .problem"), name
                bad = axe_violations(browser)
                if bad:
                    found.append(f"{name} ({scheme}):\n{describe(bad)}")
                shots.append(screenshot(browser, folder, f"{name} desktop {scheme}").name)
                emulate(browser, PHONE, dark)
                browser.get(f"{stack.api_url}{path}")
                visible(browser, "main h1")
                width = browser.execute_script("return document.documentElement.scrollWidth")
                wide = browser.execute_script(WIDE_ELEMENTS, PHONE[0] + 1)
                assert width <= PHONE[0] + 1, f"{name} is {width}px wide at phone width: {wide}"
                bad = axe_violations(browser)
                if bad:
                    found.append(f"{name} ({scheme}, phone):\n{describe(bad)}")
                shots.append(screenshot(browser, folder, f"{name} phone {scheme}").name)
        emulate(browser, DESKTOP, dark=False)
        return found, shots

    def recurring_shown() -> tuple[str, str]:
        browser.get(f"{stack.api_url}/console/incidents/{incident['id']}")
        cause = browser.find_element(By.CSS_SELECTOR, f"#causes li[data-change='deploy-{version}']")
        facts = [
            f"{dt.text}: {dd.text}"
            for dt, dd in zip(
                cause.find_elements(By.CSS_SELECTOR, "dl.change dt"),
                cause.find_elements(By.CSS_SELECTOR, "dl.change dd"),
                strict=True,
            )
        ]
        return str(visible(browser, "#recurring").text), "; ".join(facts)

    violations, shots = await run(walk)
    recurring, cause = await run(recurring_shown)
    assert title in recurring
    # The probable cause says what its change event said: kind, status, version (the
    # incident as the api has it carries the same).
    assert cause == (
        f"Kind: deploy; Status: failed; Version: {version}; Environment: production; "
        "Service: api-svc"
    ), cause
    (change,) = [
        c["change"] for c in incident["probable_causes"] if c["change"]["version"] == version
    ]
    assert (change["kind"], change["status"], change["change_id"]) == (
        "deploy",
        "failed",
        f"deploy-{version}",
    )
    assert not violations, "\n\n".join(violations)
    assert len(shots) == 4 * (len(routes) + 1)


async def test_the_first_page_is_usable_within_a_second(stack: Stack, browser: WebDriver) -> None:
    token, _ = await stack.token_for("api-resp")

    def measure() -> list[float]:
        sign_in_with_token(browser, stack.api_url, token, "/console/")
        times = []
        for _ in range(3):
            browser.get(f"{stack.api_url}/console/")
            visible(browser, "#incidents")
            timing = browser.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [n.domContentLoadedEventEnd, n.responseEnd];"
            )
            times.append(float(timing[0]))
        return times

    times = await run(measure)
    print(f"console first page, DOMContentLoaded in ms: {[round(t) for t in times]}")
    assert min(times) < FIRST_PAGE_MS, times
