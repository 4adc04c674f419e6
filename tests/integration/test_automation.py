"""Automation actions through the whole stack (stack_config/85-automation.yaml; a recording
HTTP peer on 127.0.0.1:31941 plays the runbook runner at /runbook/...):

- an incident that matches a rule fires its HTTP action once, signed like webhooks, with
  the firing's Idempotency-Key; the request, the answer's status and an excerpt of its body
  are a note on the incident's timeline by ``automation:<rule>``; an incident-command rule
  adds its note;
- an action that requires approval waits (a note says so, the runner hears nothing); a
  person outside the service's team may not approve it (403); its responder approves it
  over the REST API, and it runs once, the approval and the result on the timeline; a
  second approval is a 409; a rejected one (with the CLI) never runs;
- the approval is asked of auto-resp (on call) by a message with signed approve/reject
  links: GET shows a form and changes nothing, the POST approves as auto-resp and the
  action runs once; the link again, or a reject link, answers 409;
- the console's incident page lists the waiting action; a viewer sees no buttons, the
  responder approves it there (in headless chromium, no serious axe-core violation, light
  and dark) and it runs once;
- an approval nobody decides in time expires with one timeline entry, still one after
  notification restarts and sweeps the same firing again; a decision then is a 409;
- a person sets an incident's priority over the REST API and the CLI (a priority
  insight.priorities does not know is a 400 naming the field); a rule's ``priority``
  action sets it as ``automation:<rule>``; both are PRIORITY_CHANGED entries;
- across a SIGKILL of notification (one incident's action done just before, another's
  waiting in Kafka while it is down) and a replay of the same firing, each incident's
  action reaches the runner exactly once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from tocsin.v1 import incident_pb2, incident_service_pb2, incident_service_pb2_grpc
from tocsin_common.automation.rules import HttpRequestPlan, PlannedAction
from tocsin_escalation.escalator import automation_record
from tocsin_notification.approvals import EXPIRING_KEY
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, verify

from tests.integration.console_browser import (
    DESKTOP,
    axe_violations,
    describe,
    emulate,
    flash,
    open_browser,
    post_form,
    run,
    sign_in_with_token,
    visible,
)
from tests.integration.harness import Stack
from tests.integration.test_cli import tocsin
from tools.recorder import RecordedRequest, RecordingHttpPeer

pytestmark = pytest.mark.integration

ROUTING_KEY = "itautomation00000000000000000001"
RUNNER_PORT = 31941  # fixed: written into stack_config/85-automation.yaml


@pytest.fixture(scope="module")
async def runner() -> AsyncIterator[RecordingHttpPeer]:
    peer = RecordingHttpPeer(RUNNER_PORT)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


async def trigger(stack: Stack, story: str, klass: str = "") -> str:
    title = f"automation {story} {os.urandom(4).hex()}"
    payload = {"summary": title, "source": "auto-tests", "severity": "critical"}
    if klass:
        payload["class"] = klass
    body = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": title,
        "payload": payload,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response,
    ):
        assert response.status == 202, await response.text()
    return title


def runs_of(
    runner: RecordingHttpPeer, title: str, path: str = "/runbook/restart"
) -> list[RecordedRequest]:
    found = []
    for request in list(runner.requests):
        if request.path != path:
            continue
        try:
            body = request.json()
        except ValueError:
            continue
        if body.get("title") == title:
            found.append(request)
    return found


async def wait_runs(
    stack: Stack,
    runner: RecordingHttpPeer,
    title: str,
    path: str = "/runbook/restart",
    timeout: float = 60.0,
) -> list[RecordedRequest]:
    deadline = time.monotonic() + timeout
    while not runs_of(runner, title, path):
        assert time.monotonic() < deadline, f"no action for {title!r}\n{stack.logs()}"
        await asyncio.sleep(0.1)
    return runs_of(runner, title, path)


async def wait_notes(
    stack: Stack, incident_id: str, actors: set[str], timeout: float = 30.0
) -> list[incident_pb2.IncidentEvent]:
    """The incident's notes once every actor of ``actors`` has one."""
    stub = incident_service_pb2_grpc.IncidentServiceStub(stack.channel("escalation"))
    deadline = time.monotonic() + timeout
    while True:
        timeline = await stub.Timeline(
            incident_service_pb2.TimelineRequest(incident_id=incident_id)
        )
        notes = [
            e for e in timeline.events if e.type == incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED
        ]
        if actors <= {n.actor for n in notes}:
            return notes
        assert time.monotonic() < deadline, f"notes: {[(n.actor, n.message) for n in notes]}"
        await asyncio.sleep(0.2)


async def test_an_action_runs_once_per_incident_across_a_sigkill_of_notification(
    stack: Stack,
    runner: RecordingHttpPeer,
) -> None:
    first = await trigger(stack, "first")
    [run] = await wait_runs(stack, runner, first)
    body = run.json()
    incident_id = body["incident"]
    assert body["trigger"] == "triggered"
    assert run.method == "POST"
    assert run.headers["Idempotency-Key"] == f"automation/{incident_id}/auto-restart/triggered"
    assert verify(
        stack.webhook_secret.encode(), run.body, run.headers[SIGNATURE_HEADER], time.time()
    )

    # The result on the timeline: request, status, excerpt; and the note rule's note.
    notes = await wait_notes(
        stack, incident_id, {"automation:auto-restart", "automation:auto-note"}
    )
    [result] = [n.message for n in notes if n.actor == "automation:auto-restart"]
    assert "rule auto-restart (triggered): POST http://127.0.0.1:" in result
    assert result.endswith('→ HTTP 200: {"ok": true}'), result
    [note] = [n.message for n in notes if n.actor == "automation:auto-note"]
    assert note == "Runbook: https://wiki.example.com/runbooks/auto-svc"

    # SIGKILL notification just after the first action (its offset may not be committed
    # yet), and trigger a second incident while it is down: its action waits in Kafka.
    notification = stack.services["notification"]
    notification.kill()
    second = await trigger(stack, "second")
    await asyncio.sleep(2)
    notification.start()
    await notification.wait_healthy()
    [second_run] = await wait_runs(stack, runner, second)
    second_id = second_run.json()["incident"]

    # A replay of the first firing (escalation replaying its event produces the same key).
    replay = incident_pb2.Incident(incident_id=incident_id, service_id="auto-svc", title=first)
    planned = PlannedAction(
        key=f"automation/{incident_id}/auto-restart/triggered",
        rule_id="auto-restart",
        incident_id=incident_id,
        trigger="triggered",
        requires_approval=False,
        planned_at=datetime.now(UTC),
        http=HttpRequestPlan(
            url=f"http://127.0.0.1:{RUNNER_PORT}/runbook/restart",
            method="POST",
            body=run.body.decode(),
            content_type="application/json",
            signed=True,
            timeout_seconds=5,
        ),
    )
    topic, key, message = automation_record(replay, planned, datetime.now(UTC))
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic.name, message.SerializeToString(), key=key.encode())
    finally:
        await producer.stop()

    await asyncio.sleep(5)  # time for a repeat to arrive, were there one
    assert len(runs_of(runner, first)) == 1, [r.headers for r in runs_of(runner, first)]
    assert len(runs_of(runner, second)) == 1
    await wait_notes(stack, second_id, {"automation:auto-restart", "automation:auto-note"})
    notes = await wait_notes(stack, incident_id, {"automation:auto-restart"})
    assert len([n for n in notes if n.actor == "automation:auto-restart"]) == 1


async def decide(
    stack: Stack, incident_id: str, token: str, verdict: str = "approve"
) -> tuple[int, dict[str, object]]:
    url = f"{stack.api_url}/api/v1/incidents/{incident_id}/automation/auto-gated/{verdict}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            json={"reason": "runbook reviewed"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_an_action_that_requires_approval_waits_then_runs_once_approved(
    stack: Stack,
    runner: RecordingHttpPeer,
) -> None:
    title = await trigger(stack, "gated", klass="gated")
    # The ungated rule runs at once: it gives the incident's id.
    [run] = await wait_runs(stack, runner, title)
    incident_id = run.json()["incident"]
    notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
    [waiting] = [n.message for n in notes if n.actor == "automation:auto-gated"]
    assert "rule auto-gated (triggered): POST http://127.0.0.1:" in waiting
    assert "waits for approval until" in waiting, waiting
    assert f"/api/v1/incidents/{incident_id}/automation/auto-gated/approve" in waiting
    await asyncio.sleep(2)
    assert runs_of(runner, title, "/runbook/gated") == []

    stranger, _ = await stack.token_for("auto-stranger")
    status, answer = await decide(stack, incident_id, stranger)
    assert status == 403, answer
    assert runs_of(runner, title, "/runbook/gated") == []

    responder, _ = await stack.token_for("auto-resp")
    status, answer = await decide(stack, incident_id, responder)
    assert status == 200, answer
    [approval] = answer["approvals"]  # type: ignore[misc]
    assert approval["state"] == "approved"
    assert approval["decided_by"] == "auto-resp"
    assert approval["reason"] == "runbook reviewed"
    assert approval["key"] == f"automation/{incident_id}/auto-gated/triggered"

    [gated] = await wait_runs(stack, runner, title, "/runbook/gated")
    assert gated.headers["Idempotency-Key"] == approval["key"]
    notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
    deadline = time.monotonic() + 30
    while len([n for n in notes if n.actor == "automation:auto-gated"]) < 3:
        assert time.monotonic() < deadline, [(n.actor, n.message) for n in notes]
        await asyncio.sleep(0.2)
        notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
    messages = [n.message for n in notes if n.actor == "automation:auto-gated"]
    assert "approved by auto-resp: runbook reviewed" in messages[1], messages
    assert messages[2].endswith('(approved by auto-resp) → HTTP 200: {"ok": true}'), messages

    status, answer = await decide(stack, incident_id, responder)
    assert status == 409, answer
    assert "already approved by auto-resp" in str(answer)
    await asyncio.sleep(2)
    assert len(runs_of(runner, title, "/runbook/gated")) == 1


async def test_a_rejected_action_never_runs_cli(stack: Stack, runner: RecordingHttpPeer) -> None:
    title = await trigger(stack, "rejected", klass="gated")
    [run] = await wait_runs(stack, runner, title)
    incident_id = run.json()["incident"]
    await wait_notes(stack, incident_id, {"automation:auto-gated"})
    responder, _ = await stack.token_for("auto-resp")
    env = {"TOCSIN_API_URL": stack.api_url, "TOCSIN_TOKEN": responder}
    args = ("automation", "reject", incident_id, "auto-gated", "--reason", "not now")
    rejected = await tocsin(*args, "-o", "json", env=env)
    assert rejected.code == 0, rejected.stderr
    [approval] = rejected.json()["approvals"]
    assert (approval["state"], approval["decided_by"]) == ("rejected", "auto-resp")
    again = await tocsin(*args, env=env)
    assert again.code == 5, (again.stdout, again.stderr)  # 409: already rejected
    assert "already rejected by auto-resp" in again.stderr
    deadline = time.monotonic() + 30
    while True:
        notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
        messages = [n.message for n in notes if n.actor == "automation:auto-gated"]
        if len(messages) >= 2:
            break
        assert time.monotonic() < deadline, messages
        await asyncio.sleep(0.2)
    assert messages[1].endswith("rejected by auto-resp: not now"), messages
    await asyncio.sleep(2)
    assert runs_of(runner, title, "/runbook/gated") == []


async def wait_priority(
    stack: Stack, incident_id: str, timeout: float = 30.0
) -> incident_pb2.IncidentEvent:
    stub = incident_service_pb2_grpc.IncidentServiceStub(stack.channel("escalation"))
    deadline = time.monotonic() + timeout
    while True:
        timeline = await stub.Timeline(
            incident_service_pb2.TimelineRequest(incident_id=incident_id)
        )
        changed = [
            e
            for e in timeline.events
            if e.type == incident_pb2.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED
        ]
        if changed:
            assert len(changed) == 1, [(e.actor, e.message) for e in changed]
            return changed[0]
        assert time.monotonic() < deadline, [(e.type, e.message) for e in timeline.events]
        await asyncio.sleep(0.2)


async def test_a_person_and_a_rule_set_an_incident_s_priority(
    stack: Stack, runner: RecordingHttpPeer
) -> None:
    title = await trigger(stack, "priority by hand")
    [run] = await wait_runs(stack, runner, title)
    incident_id = run.json()["incident"]
    responder, _ = await stack.token_for("auto-resp")
    stranger, _ = await stack.token_for("auto-stranger")
    url = f"{stack.api_url}/api/v1/incidents/{incident_id}/priority"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, json={"priority": "P9"}, headers={"Authorization": f"Bearer {responder}"}
        ) as response:
            assert response.status == 400
            problem = await response.json(content_type=None)
        assert problem["errors"][0]["field"] == "priority", problem
        assert "not one of insight.priorities (P2)" in problem["detail"]
        async with session.post(
            url, json={"priority": "P2"}, headers={"Authorization": f"Bearer {stranger}"}
        ) as response:
            assert response.status == 404  # may not read it: as if there were none
    env = {"TOCSIN_API_URL": stack.api_url, "TOCSIN_TOKEN": responder}
    done = await tocsin("incidents", "priority", incident_id, "P2", env=env)
    assert done.code == 0, done.stderr
    changed = await wait_priority(stack, incident_id)
    assert (changed.actor, changed.message) == ("auto-resp", "priority changed to P2 by auto-resp")
    assert changed.incident.priority == "P2"
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.api_url}/api/v1/incidents/{incident_id}",
            headers={"Authorization": f"Bearer {responder}"},
        ) as response,
    ):
        assert (await response.json())["priority"] == "P2"

    by_rule = await trigger(stack, "priority by rule", klass="prio")
    [run] = await wait_runs(stack, runner, by_rule)
    changed = await wait_priority(stack, run.json()["incident"])
    assert changed.actor == "automation:auto-priority"
    assert changed.message == "priority changed to P2 by automation:auto-priority"


async def test_an_approval_nobody_decides_expires_with_one_timeline_entry(
    stack: Stack, runner: RecordingHttpPeer
) -> None:
    title = await trigger(stack, "expires", klass="brief")
    [run] = await wait_runs(stack, runner, title)
    incident_id = run.json()["incident"]
    key = f"automation/{incident_id}/auto-brief/triggered"

    def expired_notes(notes: list[incident_pb2.IncidentEvent]) -> list[str]:
        return [
            n.message
            for n in notes
            if n.actor == "automation:auto-brief" and "its approval expired at" in n.message
        ]

    deadline = time.monotonic() + 30
    while not expired_notes(notes := await wait_notes(stack, incident_id, set())):
        assert time.monotonic() < deadline, [(n.actor, n.message) for n in notes]
        await asyncio.sleep(0.3)
    [message] = expired_notes(notes)
    assert message.startswith("Automation rule auto-brief (triggered): POST http://127.0.0.1:")
    assert message.endswith("without a decision; it will not run"), message

    responder, _ = await stack.token_for("auto-resp")
    url = f"{stack.api_url}/api/v1/incidents/{incident_id}/automation/auto-brief/approve"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers={"Authorization": f"Bearer {responder}"}) as response,
    ):
        assert response.status == 409
        assert "is already expired" in (await response.json(content_type=None))["detail"]

    # As if notification died after the entry, before it took the firing off its list:
    # restarted, it sweeps the firing again and adds no second entry.
    redis = Redis.from_url(stack.redis_url)
    try:
        assert await redis.zscore(EXPIRING_KEY, key) is None
        notification = stack.services["notification"]
        notification.kill()
        await redis.zadd(EXPIRING_KEY, {key: 1.0})
        notification.start()
        await notification.wait_healthy()
        deadline = time.monotonic() + 30
        while await redis.zscore(EXPIRING_KEY, key) is not None:
            assert time.monotonic() < deadline, "the restarted sweep did not take it"
            await asyncio.sleep(0.3)
    finally:
        await redis.aclose()
    await asyncio.sleep(1)
    assert len(expired_notes(await wait_notes(stack, incident_id, set()))) == 1
    assert runs_of(runner, title, "/runbook/brief") == []


def approval_links(runner: RecordingHttpPeer, incident_id: str) -> dict[str, str]:
    """The approve/reject links of the messages auto-resp's webhook received for the
    incident (alone, or bundled with a page)."""
    found: dict[str, str] = {}
    for request in list(runner.requests):
        if request.path != "/pages/auto-resp":
            continue
        body = request.json()
        lines = body.get("incidents") or [{"id": body["incident"]["id"], **body}]
        for line in lines:
            if line.get("id") == incident_id:
                links = line.get("links", {})
                found.update({k: v for k, v in links.items() if k in ("approve", "reject")})
    return found


async def test_a_signed_link_approves_a_waiting_action_which_then_runs_once(
    stack: Stack, runner: RecordingHttpPeer
) -> None:
    title = await trigger(stack, "by link", klass="gated")
    [run] = await wait_runs(stack, runner, title)
    incident_id = run.json()["incident"]
    deadline = time.monotonic() + 30
    while len(links := approval_links(runner, incident_id)) < 2:
        assert time.monotonic() < deadline, f"no approval asked\n{stack.logs()}"
        await asyncio.sleep(0.2)
    notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
    [waiting] = [n.message for n in notes if n.actor == "automation:auto-gated"]
    assert "asked auto-resp with signed links" in waiting, waiting

    async with aiohttp.ClientSession() as session:
        async with session.get(links["approve"]) as response:
            assert response.status == 200
            page = await response.text()
        assert '<form method="post">' in page and "as auto-resp" in page
        await asyncio.sleep(1)
        assert runs_of(runner, title, "/runbook/gated") == []  # GET decides nothing

        async with session.post(links["approve"]) as response:
            assert response.status == 200, await response.text()
            assert "approved by auto-resp" in await response.text()
        [gated] = await wait_runs(stack, runner, title, "/runbook/gated")
        assert gated.headers["Idempotency-Key"] == f"automation/{incident_id}/auto-gated/triggered"

        for link in (links["approve"], links["reject"]):
            async with session.post(link) as response:
                assert response.status == 409
                assert response.headers["X-Tocsin-Approval-State"] == "approved"
    deadline = time.monotonic() + 30
    while True:
        notes = await wait_notes(stack, incident_id, {"automation:auto-gated"})
        messages = [n.message for n in notes if n.actor == "automation:auto-gated"]
        if len(messages) >= 3:
            break
        assert time.monotonic() < deadline, messages
        await asyncio.sleep(0.2)
    assert messages[1].endswith("approved by auto-resp"), messages
    assert "(approved by auto-resp) → HTTP 200" in messages[2], messages
    await asyncio.sleep(2)
    assert len(runs_of(runner, title, "/runbook/gated")) == 1


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from open_browser()


async def test_a_responder_approves_a_waiting_action_from_the_console(
    stack: Stack, runner: RecordingHttpPeer, browser: WebDriver
) -> None:
    title = await trigger(stack, "console", klass="gated")
    [run_] = await wait_runs(stack, runner, title)
    incident_id = run_.json()["incident"]
    await wait_notes(stack, incident_id, {"automation:auto-gated"})
    page = f"/console/incidents/{incident_id}"

    viewer, _ = await stack.token_for("auto-viewer")

    def as_viewer() -> tuple[str, int]:
        sign_in_with_token(browser, stack.api_url, viewer, page)
        row = visible(browser, "#approvals tr[data-rule=auto-gated]")
        return row.get_attribute("data-state") or "", len(
            browser.find_elements(By.CSS_SELECTOR, "#approvals button")
        )

    assert await run(as_viewer) == ("pending", 0)  # may read, may not decide

    responder, _ = await stack.token_for("auto-resp")

    def as_responder() -> tuple[list[str], str]:
        sign_in_with_token(browser, stack.api_url, responder, page)
        visible(browser, "#approve-auto-gated")
        found = []
        for dark in (False, True):
            emulate(browser, DESKTOP, dark)
            bad = axe_violations(browser)
            if bad:
                found.append(f"{'dark' if dark else 'light'}:\n{describe(bad)}")
        emulate(browser, DESKTOP, False)
        browser.find_element(
            By.CSS_SELECTOR, "#approvals input[name=reason]"
        ).send_keys("checked from the console")
        post_form(browser, "#approve-auto-gated")
        return found, flash(browser)

    violations, shown = await run(as_responder)
    assert violations == [], "\n".join(violations)
    assert shown == "automation auto-gated: approved; it runs now", shown
    [gated] = await wait_runs(stack, runner, title, "/runbook/gated")
    assert gated.headers["Idempotency-Key"] == f"automation/{incident_id}/auto-gated/triggered"

    def decided() -> tuple[str, int, str]:
        browser.get(f"{stack.api_url}{page}")
        row = visible(browser, "#approvals tr[data-rule=auto-gated]")
        return (
            row.get_attribute("data-state") or "",
            len(browser.find_elements(By.CSS_SELECTOR, "#approvals button")),
            row.text,
        )

    state, buttons, text = await run(decided)
    assert (state, buttons) == ("approved", 0)
    assert "Ada Responder: checked from the console" in text, text
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.api_url}/api/v1/incidents/{incident_id}/automation/approvals",
            headers={"Authorization": f"Bearer {responder}"},
        ) as response,
    ):
        [approval] = (await response.json())["approvals"]
    assert (approval["state"], approval["decided_by"]) == ("approved", "auto-resp")
    await asyncio.sleep(2)
    assert len(runs_of(runner, title, "/runbook/gated")) == 1
