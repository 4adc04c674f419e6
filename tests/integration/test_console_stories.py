"""The web console in a real headless browser (chromium), as people use it; each story then
checks the backend through the REST API, not only what the page says.

People come from stack_config/70-api.yaml: Ana (api-resp) responds for api-svc, Mo
(api-mgr) manages its team. Mo signs in through the real OpenID Connect provider.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from tocsin.v1 import oncall_service_pb2, oncall_service_pb2_grpc
from tocsin_api.console.session import SESSION_COOKIE
from tocsin_api.console.views import duration, trend_text
from tocsin_common.timeutil import to_timestamp

from tests.integration.api_client import (
    client,
    incident_titled,
    trigger,
    until_status,
    user_client,
)
from tests.integration.console_browser import (
    flash,
    open_browser,
    post_form,
    run,
    sign_in_with_token,
    visible,
    wait,
)
from tests.integration.harness import Stack
from tests.integration.test_api_analytics import _report, _resolved_incident, _time

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from open_browser()


async def test_a_manager_signs_in_through_the_oidc_provider_and_silences(
    stack: Stack, oidc_provider: str, browser: WebDriver
) -> None:
    sub = f"console-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient() as http:
        made = await http.put(
            f"{oidc_provider}/users/{sub}", json={"preferred_username": "api-mgr"}
        )
        assert made.status_code == 204, made.text
    matcher = f'alertname="ConsoleOidc{uuid.uuid4().hex[:6]}"'

    def story() -> str:
        browser.delete_all_cookies()
        browser.get(f"{stack.api_url}/console/silences")
        visible(browser, "#oidc").click()  # to the provider: code + PKCE
        field = visible(browser, "input[name=sub][placeholder=sub]")
        field.send_keys(sub)
        field.submit()  # the provider redirects to the console's callback
        wait(browser, lambda d: d.current_url.startswith(f"{stack.api_url}/console/silences"))
        assert "Mo Manager" in visible(browser, ".who").text
        visible(browser, "#matchers").send_keys(matcher)
        Select(browser.find_element(By.ID, "service")).select_by_visible_text("api-svc")
        browser.find_element(By.ID, "comment").send_keys("signed in with OIDC")
        post_form(browser, "#create-silence")
        return flash(browser)

    shown = await run(story)
    assert "created" in shown, shown
    async with client(stack) as api:
        found = (await api.get("/silences", params={"service_id": "api-svc"})).json()["silences"]
    (silence,) = [s for s in found if s["matchers"] == [matcher]]
    assert silence["created_by"] == "api-mgr"  # the services saw the person, not the api


async def test_a_triggered_incident_appears_live_is_acknowledged_then_resolved(
    stack: Stack, browser: WebDriver
) -> None:
    token, _ = await stack.token_for("api-resp")
    await run(sign_in_with_token, browser, stack.api_url, token, "/console/")

    def listening() -> None:
        wait(
            browser,
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "open",
        )
        browser.execute_script("window.tocsinMarker = 'same page';")

    await run(listening)
    title = await trigger(stack)

    def appears_and_is_acknowledged() -> str:
        row = wait(
            browser,
            lambda d: next(
                (
                    r
                    for r in d.find_elements(By.CSS_SELECTOR, "#incidents tbody tr")
                    if title in r.text
                ),
                False,
            ),
            timeout=60,
        )
        # It arrived without a reload: the page's own state is still there.
        assert browser.execute_script("return window.tocsinMarker") == "same page"
        row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        post_form(browser, "button[value=acknowledge]")
        return flash(browser)

    shown = await run(appears_and_is_acknowledged)
    assert "acknowledge: 1 of 1 accepted" in shown, shown
    async with client(stack) as api:
        incident = await incident_titled(api, title)
        await until_status(api, incident["id"], "acknowledged")
        entries = (await api.get(f"/incidents/{incident['id']}/log_entries")).json()["log_entries"]
        assert any(e["type"] == "acknowledged" and e["actor"] == "api-resp" for e in entries)

    def reassigns_in_bulk() -> str:
        browser.get(f"{stack.api_url}/console/")
        row = wait(
            browser,
            lambda d: next(
                (
                    r
                    for r in d.find_elements(By.CSS_SELECTOR, "#incidents tbody tr")
                    if title in r.text
                ),
                False,
            ),
        )
        row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        Select(browser.find_element(By.CSS_SELECTOR, ".bulk select[name=user_id]")).select_by_value(
            "api-mgr"
        )
        post_form(browser, "button[value=reassign]")
        return flash(browser)

    shown = await run(reassigns_in_bulk)
    assert "reassign: 1 of 1 accepted" in shown, shown
    async with client(stack) as api:
        deadline = asyncio.get_running_loop().time() + 30
        while (await api.get(f"/incidents/{incident['id']}")).json()[
            "assigned_user_id"
        ] != "api-mgr":
            assert asyncio.get_running_loop().time() < deadline, "not reassigned to api-mgr"
            await asyncio.sleep(0.2)

    def resolves_from_its_page() -> str:
        browser.get(f"{stack.api_url}/console/incidents/{incident['id']}")
        assert title in visible(browser, "h1").text
        post_form(browser, "#resolve")
        return flash(browser)

    shown = await run(resolves_from_its_page)
    assert "resolve: accepted" in shown, shown
    async with client(stack) as api:
        await until_status(api, incident["id"], "resolved")
        entries = (await api.get(f"/incidents/{incident['id']}/log_entries")).json()["log_entries"]
    acked_at = next(e["at"] for e in entries if e["type"] == "acknowledged")

    def as_it_was_when_acknowledged() -> str:
        browser.get(f"{stack.api_url}/console/incidents/{incident['id']}?at={acked_at}")
        return str(visible(browser, "#as-of").text)

    past = await run(as_it_was_when_acknowledged)
    assert "acknowledged" in past and "resolved" not in past, past

    def audit_is_refused() -> str:
        browser.get(f"{stack.api_url}/console/audit")  # not in Ana's menu, and refused anyway
        return str(visible(browser, ".problem").text)

    assert "admin" in await run(audit_is_refused)


async def test_a_manager_creates_and_expires_a_silence(stack: Stack, browser: WebDriver) -> None:
    token, _ = await stack.token_for("api-mgr")
    title = await trigger(stack, f"Console disk {uuid.uuid4().hex[:6]}")
    async with client(stack) as api:
        await incident_titled(api, title)
    matcher = f'summary="{title}"'

    def previews_then_creates() -> tuple[str, str]:
        sign_in_with_token(browser, stack.api_url, token, "/console/silences")
        visible(browser, "#matchers").send_keys(matcher)
        Select(browser.find_element(By.ID, "service")).select_by_visible_text("api-svc")
        minutes = browser.find_element(By.ID, "minutes")
        minutes.clear()
        minutes.send_keys("30")
        post_form(browser, "#preview-silence")  # nothing made: the form comes back filled
        preview = str(visible(browser, "#preview").text)
        post_form(browser, "#create-silence")
        return preview, flash(browser)

    preview, shown = await run(previews_then_creates)
    assert "It would mute 1 alert(s) now" in preview and title in preview, preview
    assert "created" in shown
    async with client(stack) as api:
        active = (await api.get("/silences", params={"service_id": "api-svc"})).json()["silences"]
    (silence,) = [s for s in active if s["matchers"] == [matcher]]
    ends = datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=29) < ends - datetime.now(UTC) <= timedelta(minutes=30)

    def expires() -> str:
        row = visible(browser, f"#silences tr[data-id='{silence['id']}']")
        post_form(browser, f"#silences tr[data-id='{silence['id']}'] button")
        assert row is not None
        return flash(browser)

    assert "expired" in await run(expires)
    async with client(stack) as api:
        active = (await api.get("/silences", params={"service_id": "api-svc"})).json()["silences"]
    assert silence["id"] not in [s["id"] for s in active]


def _mo_s_next_day() -> date:
    """The next day (from tomorrow) the API rota (daily from 2026-01-05, Ana then Mo) gives
    to Mo: an override there visibly changes who is on call."""
    day = datetime.now(UTC).date() + timedelta(days=1)
    while (day - date(2026, 1, 5)).days % 2 != 1:
        day += timedelta(days=1)
    return day


async def _on_call(stack: Stack, since: datetime, until: datetime) -> list[Any]:
    async with client(stack) as api:
        reply = await api.get(
            "/schedules/api-rota",
            params={"since": since.isoformat(), "until": until.isoformat()},
        )
    assert reply.status_code == 200, reply.text
    return [span["user_ids"] for span in reply.json()["final_schedule"]]


async def _escalation_overrides(stack: Stack, since: datetime, until: datetime) -> list[Any]:
    """The overrides escalation itself holds over a range (its gRPC answer, not the api's)."""
    async with stack.channel("escalation") as channel:
        reply = await oncall_service_pb2_grpc.OnCallServiceStub(channel).RenderSchedule(
            oncall_service_pb2.RenderScheduleRequest(
                schedule_id="api-rota", since=to_timestamp(since), until=to_timestamp(until)
            )
        )
    return [(o.override_id, o.user_id, o.created_by) for o in reply.overrides]


def _final_row(browser: WebDriver, day: date) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f".final .track[data-day='{day.isoformat()}']")


async def test_a_responder_drags_and_adds_an_override_on_the_calendar_then_deletes_it(
    stack: Stack, browser: WebDriver
) -> None:
    token, _ = await stack.token_for("api-resp")
    day = _mo_s_next_day()
    start = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
    end = start + timedelta(hours=2)
    assert await _on_call(stack, start, end) == [["api-mgr"]]

    def drags_and_adds() -> str:
        sign_in_with_token(browser, stack.api_url, token, "/console/schedules")
        visible(browser, "a[href='/console/schedules/api-rota']").click()
        since = visible(browser, "input[name=since]")
        browser.execute_script("arguments[0].value = arguments[1]", since, day.isoformat())
        post_form(browser, "form[aria-label=Range] button")
        row = _final_row(browser, day)
        assert [b.text for b in row.find_elements(By.CSS_SELECTOR, ".blk .who")] == ["Mo Manager"]
        # A drag over the day's Final row from 02:00 to 04:00 fills the form's times.
        width = row.size["width"]

        def at(slot: float) -> int:  # an x offset from the row's centre
            return round(width * (slot + 0.3) / 96 - width / 2)

        ActionChains(browser).move_to_element_with_offset(
            row, at(8), 0
        ).click_and_hold().move_by_offset(at(16) - at(8), 0).release().perform()
        form = browser.find_element(By.ID, "override-form")
        filled = (
            form.find_element(By.NAME, "start").get_attribute("value"),
            form.find_element(By.NAME, "end").get_attribute("value"),
        )
        assert filled == (start.strftime("%Y-%m-%dT%H:%M"), end.strftime("%Y-%m-%dT%H:%M")), filled
        assert "Override form filled" in browser.find_element(By.ID, "live").text
        Select(browser.find_element(By.NAME, "user_id")).select_by_value("api-resp")
        post_form(browser, "#add-override")
        shown = flash(browser)
        override_id = browser.find_element(By.CSS_SELECTOR, "input[data-flash=override]")
        # The calendar shows the same day again, the override's shift marked on the Final row.
        row = _final_row(browser, day)
        marked = [b.text for b in row.find_elements(By.CSS_SELECTOR, ".blk.ovr .who")]
        assert marked == ["Ana Responder"], marked
        hidden = row.find_element(By.CSS_SELECTOR, ".blk.ovr .when").get_attribute("textContent")
        assert start.strftime("%H:%M") in hidden and end.strftime("%H:%M") in hidden
        return f"{shown}|{override_id.get_attribute('value')}"

    shown, override_id = (await run(drags_and_adds)).split("|")
    assert "added" in shown and override_id
    assert await _on_call(stack, start, end) == [["api-resp"]]
    assert await _escalation_overrides(stack, start, end) == [(override_id, "api-resp", "api-resp")]

    def deletes() -> str:
        post_form(browser, f"#overrides tr[data-id='{override_id}'] button")
        text = flash(browser)
        assert not browser.find_elements(By.CSS_SELECTOR, f"#overrides tr[data-id='{override_id}']")
        assert not _final_row(browser, day).find_elements(By.CSS_SELECTOR, ".blk.ovr")
        return text

    assert "deleted" in await run(deletes)
    assert await _escalation_overrides(stack, start, end) == []
    assert await _on_call(stack, start, end) == [["api-mgr"]]


async def test_the_insight_page_and_csv_show_what_the_api_reports(
    stack: Stack, browser: WebDriver
) -> None:
    # An anl-svc incident acknowledged after a known delay, then resolved; its title would
    # be markup if the review draft were not escaped.
    title = f"<script>window.pwned = 1</script> insight {uuid.uuid4().hex[:6]}"
    incident = await _resolved_incident(stack, title)
    created = _time(incident["created_at"])
    params = {
        "service_id": "anl-svc",
        "since": created.isoformat(),
        "until": (created + timedelta(seconds=1)).isoformat(),
    }
    async with await user_client(stack, "anl-viewer") as api:
        (row,) = await _report(api, {**params, "group_by": "service"})
        draft = (await api.get(f"/incidents/{incident['id']}/review_draft")).text
        series = await api.get(
            "/analytics/timeseries", params={**params, "metric": "seconds_to_first_ack"}
        )
        overview = (await api.get("/analytics/overview", params=params)).json()
    token, _ = await stack.token_for("anl-viewer")
    query = httpx.QueryParams({**params, "group": "service"})

    def dashboard() -> tuple[str, str, str, list[list[str]], str, str | None]:
        sign_in_with_token(browser, stack.api_url, token, f"/console/insight?{query}")
        group = visible(browser, ".kpi-group")
        noisy = [
            [cell.text for cell in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#noisy tbody tr")
        ]
        mtta = group.find_element(By.CSS_SELECTOR, "[data-kpi='0'] [data-stat=mean]").text
        trend = browser.find_element(By.ID, "trends").text
        total = str(group.get_attribute("data-total"))
        browser.get(f"{stack.api_url}/console/incidents/{incident['id']}/review")
        shown = browser.execute_script("return document.getElementById('review-draft').textContent")
        scripts = browser.execute_script(
            "return [document.querySelectorAll('main script').length, window.pwned]"
        )
        assert scripts == [0, None], scripts
        assert "<script>window.pwned" not in browser.page_source
        cookie = browser.get_cookie(SESSION_COOKIE)
        return (
            total,
            mtta,
            trend,
            noisy,
            str(shown),
            (cookie or {}).get("value"),
        )

    total, mtta, trend, noisy, shown, session = await run(dashboard)
    assert total == str(row["total_incident_count"]) == "1"
    # The overview's noise: the page's table is the api's noisiest sources (this one alert).
    sources = [[n["source"], str(n["alerts"])] for n in overview["top_sources"]]
    assert noisy == sources and len(sources) == 1, (noisy, overview)
    assert mtta == duration(row["seconds_to_first_ack"]["mean"]), (mtta, row)
    assert f"Time to acknowledge: {trend_text(series.json())}" in trend, trend
    # The Markdown shown as text, exactly (insight writes the title's markup as entities,
    # and the page escapes them again); no script element came of it.
    assert shown == draft and "window.pwned = 1" in shown
    assert session
    async with httpx.AsyncClient(cookies={SESSION_COOKIE: session}) as http:
        csv = await http.get(f"{stack.api_url}/console/insight.csv?{query}")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    header, line = (r.split(",") for r in csv.text.splitlines())
    cells = dict(zip(header, line, strict=True))
    assert cells["service_id"] == "anl-svc" and cells["total_incident_count"] == "1"
    assert float(cells["seconds_to_first_ack_mean"]) == pytest.approx(
        row["seconds_to_first_ack"]["mean"], abs=0.001
    )


async def test_another_teams_viewer_sees_insight_s_refusal_as_a_message(
    stack: Stack, browser: WebDriver
) -> None:
    async with await user_client(stack, "api-viewer") as api:
        refused = await api.get("/analytics/incidents", params={"team_id": "anl-team"})
    assert refused.status_code == 403
    token, _ = await stack.token_for("api-viewer")

    def refusal() -> str:
        sign_in_with_token(browser, stack.api_url, token, "/console/insight?team_id=anl-team")
        assert visible(browser, "main h1").text == "Insight"
        return str(visible(browser, "#insight-problem").text)

    assert await run(refusal) == refused.json()["detail"]
