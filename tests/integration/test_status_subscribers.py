"""The status page's subscribers through the whole stack: a manager subscribes e-mail
addresses and webhooks to the Payments component over REST (a responder may not, nobody
without a token may); the confirmation e-mails arrive at a real SMTP peer (aiosmtpd) and
their links are followed in the real headless browser (GET shows a button, POST confirms)
or over HTTP; a responder posts a status update on an incident of the component's service;
the confirmed e-mail subscriber and the webhook (signed) each receive it exactly once, with
only what was posted for the public; the pending, the unsubscribed and another component's
subscriber receive nothing; the update is on the public page in the browser."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from tocsin_notification.providers.webhook import verify

from tests.integration.api_client import (
    assert_problem,
    client,
    incident_titled,
    trigger,
    user_client,
)
from tests.integration.console_browser import (
    flash,
    open_browser,
    post_form,
    run,
    sign_in_with_token,
    visible,
)
from tests.integration.harness import Stack
from tests.integration.test_status_page import cli, summary_when

pytestmark = pytest.mark.integration

KEY = "itspsubs000000000000000000000001"  # stack_config/86-status-subscribers.yaml
ROUTE = "/status_page/subscriptions"
LINK = re.compile(r"http://\S+/status/subscriptions/\S+")


@dataclass
class Mailbox:
    """What the SMTP peer received, parsed."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(self, address: str, subject_part: str, timeout: float = 60) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.to(address) if subject_part in str(m["Subject"])]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {subject_part!r} e-mail to {address}"
            await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
def mailbox(stack: Stack) -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=stack.smtp_port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from open_browser()


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def links_in(message: EmailMessage) -> dict[str, str]:
    """The e-mail's confirm and unsubscribe links, by their kind."""
    found = LINK.findall(text_of(message))
    return {("confirm" if "/confirm/" in link else "unsubscribe"): link for link in found}


async def subscribe(
    api: httpx.AsyncClient, kind: str, address: str, *components: str, by: str = "sp-manager"
) -> str:
    reply = await api.post(
        ROUTE, json={"kind": kind, "address": address, "components": list(components)}
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["state"] == ("pending" if kind == "email" else "confirmed")
    assert body["created_by"] == by
    return str(body["subscription_id"])


async def test_subscribers_get_a_status_update_once_each(
    stack: Stack, mailbox: Mailbox, browser: WebDriver
) -> None:
    run_id = uuid.uuid4().hex[:8]
    confirmed_to = f"ana-{run_id}@example.com"
    pending_to = f"pat-{run_id}@example.com"
    leaving_to = f"leo-{run_id}@example.com"
    hook_path = f"/status-hooks/{run_id}"
    other_path = f"/status-hooks/{run_id}-other"
    peer = f"http://127.0.0.1:{stack.pages.port}"

    # Nobody without a token, and no responder, may subscribe anybody.
    async with client(stack, "") as anonymous:
        assert_problem(await anonymous.post(ROUTE, json={"kind": "email", "address": "x@y.z"}), 401)
    async with await user_client(stack, "sp-subs-resp") as responder:
        denied = await responder.post(
            ROUTE, json={"kind": "email", "address": "x@example.com", "components": ["sp-pay"]}
        )
        assert_problem(denied, 403)

    async with await user_client(stack, "sp-manager") as manager:
        # Bad input names the field; a manager may not subscribe to every component.
        bad = await manager.post(
            ROUTE,
            json={"kind": "webhook", "address": "ftp://x.example.com", "components": ["sp-pay"]},
        )
        assert_problem(bad, 400, "address")
        assert_problem(
            await manager.post(
                ROUTE, json={"kind": "email", "address": "a@example.com", "components": ["nope"]}
            ),
            400,
            "components",
        )
        assert_problem(
            await manager.post(ROUTE, json={"kind": "email", "address": "a@example.com"}), 403
        )

        ana = await subscribe(manager, "email", confirmed_to, "sp-pay")
        # Pat is subscribed from the CLI, as a manager would from a terminal.
        token, _ = await stack.token_for("sp-manager")
        made = await cli(
            stack, token, "subscribers", "add", "--email", pending_to, "-c", "sp-pay", "-o", "json"
        )
        assert made["state"] == "pending" and made["components"] == ["sp-pay"]
        pat = made["subscription_id"]
        leo = await subscribe(manager, "email", leaving_to, "sp-pay")
        hook = await subscribe(manager, "webhook", f"{peer}{hook_path}", "sp-pay")
        other = await subscribe(manager, "webhook", f"{peer}{other_path}", "sp-pay")

        # The confirmation e-mails, through notification to the real SMTP peer.
        asking = await mailbox.wait_for(confirmed_to, "Confirm your subscription")
        assert str(asking["From"]) == "status@tocsin.example.com"
        links = links_in(asking)
        assert f"/status/subscriptions/{ana}/confirm/" in links["confirm"]
        assert str(asking["List-Unsubscribe"]) == f"<{links['unsubscribe']}>"
        await mailbox.wait_for(pending_to, "Confirm your subscription")

        # Ana follows her link in the browser: the GET shows a button and changes nothing.
        def open_link() -> str:
            browser.get(links["confirm"])
            return str(visible(browser, "form button").text)

        assert await run(open_link) == "Confirm"
        listed = {
            s["subscription_id"]: s for s in (await manager.get(ROUTE)).json()["subscriptions"]
        }
        assert listed[ana]["state"] == "pending"

        def press() -> str:
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            return str(visible(browser, "h1").text)

        assert await run(press) == "Subscription confirmed"
        async with httpx.AsyncClient(timeout=30) as http:
            again = await http.post(links["confirm"])
            assert again.status_code == 409  # moot: already confirmed
            forged = await http.post(links["confirm"][:-4] + "AAAA")
            assert forged.status_code == 404

            # Leo confirms over HTTP, then leaves by the one-click unsubscribe of his e-mail.
            leo_mail = await mailbox.wait_for(leaving_to, "Confirm your subscription")
            leo_links = links_in(leo_mail)
            assert (await http.get(leo_links["confirm"])).status_code == 200
            assert (await http.post(leo_links["confirm"])).status_code == 200
            one_click = str(leo_mail["List-Unsubscribe"]).strip("<>")
            left = await http.post(one_click, data={"List-Unsubscribe": "One-Click"})
            assert left.status_code == 200, left.text
            assert (await http.post(one_click)).status_code == 409

        # The second webhook moves to the other component, whose team the manager does not
        # manage: deleted, and made again there by an admin.
        assert (await manager.delete(f"{ROUTE}/{other}")).status_code == 204
        denied = await manager.post(
            ROUTE,
            json={"kind": "webhook", "address": f"{peer}{other_path}", "components": ["sp-web"]},
        )
        assert_problem(denied, 403)
        async with client(stack) as admin:
            other = await subscribe(
                admin, "webhook", f"{peer}{other_path}", "sp-web", by="tocsin-admin"
            )
            assert other in {
                s["subscription_id"] for s in (await admin.get(ROUTE)).json()["subscriptions"]
            }
        listed = {
            s["subscription_id"]: s for s in (await manager.get(ROUTE)).json()["subscriptions"]
        }
        assert {listed[i]["state"] for i in (ana, hook)} == {"confirmed"}
        assert listed[pat]["state"] == "pending" and listed[leo]["state"] == "unsubscribed"
        assert other not in listed  # not the manager's to see
        on_cli = await cli(stack, token, "subscribers", "list", "-o", "json")
        assert {s["subscription_id"] for s in on_cli} == set(listed)

    # The confirmation and unsubscription are audit records by the subscription itself.
    async with client(stack) as admin:
        deadline = time.monotonic() + 30
        while True:
            reply = await admin.get("/audit_records", params={"actor": f"subscription:{ana}"})
            assert reply.status_code == 200, reply.text
            records = reply.json()["audit_records"]
            if len(records) >= 2:
                break
            assert time.monotonic() < deadline, "no audit record of the confirmation"
            await asyncio.sleep(0.5)
        # Newest first: the second click was refused (moot), and recorded too; the forged
        # link's record has no actor (anonymous): its token is not the subscription's.
        assert [(r["action"], r["allowed"]) for r in records] == [
            ("status_page.subscribers.confirm", False),
            ("status_page.subscribers.confirm", True),
        ]

    # A responder posts a status update on an incident of the component's service.
    internal_title = f"payments-db replica lag {run_id}"
    await trigger(stack, internal_title, key=KEY)
    public_title = f"Payments are delayed {run_id}"
    async with await user_client(stack, "sp-subs-resp") as responder:
        incident = await incident_titled(responder, internal_title, service_id="sp-subs-svc")
        posted = await responder.post(
            f"/incidents/{incident['id']}/status_updates",
            json={
                "status": "investigating",
                "public_title": public_title,
                "message": "Card payments take longer than usual. Ask dba@example.com.",
            },
        )
        assert posted.status_code == 202, posted.text

        update = await mailbox.wait_for(confirmed_to, public_title)
        deadline = time.monotonic() + 60
        while not [r for r in stack.pages.requests if r.path == hook_path]:
            assert time.monotonic() < deadline, "the webhook subscriber got nothing"
            await asyncio.sleep(0.3)
        await asyncio.sleep(5)  # a second copy would be here by now

        # Exactly once each.
        assert len([m for m in mailbox.to(confirmed_to) if public_title in str(m["Subject"])]) == 1
        (delivered,) = [r for r in stack.pages.requests if r.path == hook_path]
        # Nothing to the pending, the unsubscribed or the other component's subscriber.
        assert [str(m["Subject"]) for m in mailbox.to(pending_to)] == [
            "[Tocsin test status] Confirm your subscription"
        ]
        assert all(public_title not in str(m["Subject"]) for m in mailbox.to(leaving_to))
        assert not [r for r in stack.pages.requests if r.path == other_path]

        # The e-mail: the public text, its unsubscribe link and header.
        text = text_of(update)
        assert str(update["Subject"]) == f"[Tocsin test status] Investigating: {public_title}"
        assert "Card payments take longer than usual. Ask [redacted]." in text
        assert "Affected: Payments" in text
        assert str(update["List-Unsubscribe"]) == f"<{links['unsubscribe']}>"
        assert f"Unsubscribe: {links['unsubscribe']}" in text

        # The webhook: signed with the webhook secret, public fields only.
        signature = delivered.headers["X-Tocsin-Signature"]
        assert verify(stack.webhook_secret.encode(), delivered.body, signature, time.time())
        body = delivered.json()
        assert body["event"] == "status_page.update"
        assert body["update"]["title"] == public_title
        assert body["update"]["status"] == "investigating"
        assert body["update"]["components"] == ["Payments"]
        assert body["subscription"]["id"] == hook
        assert delivered.headers["Idempotency-Key"] == f"status/{body['update']['id']}/{hook}"
        for leaked in (text, delivered.body.decode()):
            for internal in (internal_title, incident["id"], "sp-subs-svc", "sp-subs-resp", "dba@"):
                assert internal not in leaked, internal

    # On the public page, in the real browser.
    def shows_it(summary: dict[str, Any]) -> bool:
        return any(i["name"] == public_title for i in summary["incidents"])

    summary = await summary_when(stack, shows_it)
    (shown,) = [i for i in summary["incidents"] if i["name"] == public_title]

    def read_page() -> str:
        browser.get(f"{stack.api_url}/status")
        return str(visible(browser, f"#incident-{shown['id']} h3").text)

    assert await run(read_page) == public_title

    async with await user_client(stack, "sp-subs-resp") as responder:
        resolved = await responder.post(f"/incidents/{incident['id']}/resolve")
        assert resolved.status_code == 202

    # Deleted, nothing more goes to them (the rest of the session posts updates too).
    async with client(stack) as admin:
        for gone in (ana, pat, leo, hook, other):
            assert (await admin.delete(f"{ROUTE}/{gone}")).status_code == 204
        left = {s["subscription_id"] for s in (await admin.get(ROUTE)).json()["subscriptions"]}
        assert not left & {ana, pat, leo, hook, other}


async def test_a_manager_manages_subscribers_in_the_console(
    stack: Stack, mailbox: Mailbox, browser: WebDriver
) -> None:
    """The console's Subscribers page, as the REST routes: the manager subscribes a webhook
    and an e-mail address to Payments (the e-mail pending until confirmed, its confirmation
    sent), sees them, deletes them; a responder sees none and is refused."""
    run_id = uuid.uuid4().hex[:8]
    hook_url = f"http://127.0.0.1:{stack.pages.port}/status-hooks/console-{run_id}"
    mail_to = f"cora-{run_id}@example.com"
    manager, _ = await stack.token_for("sp-manager")
    responder, _ = await stack.token_for("sp-subs-resp")

    def subscribe_in_the_form(kind: str, address: str) -> str:
        browser.get(f"{stack.api_url}/console/subscribers")
        visible(browser, "#kind").send_keys(kind)
        browser.find_element(By.ID, "address").send_keys(address)
        browser.find_element(By.CSS_SELECTOR, "input[name=components][value=sp-pay]").click()
        post_form(browser, "#create-subscription")
        return flash(browser)

    def rows() -> dict[str, tuple[str, str]]:
        browser.get(f"{stack.api_url}/console/subscribers")
        found = {}
        for row in browser.find_elements(By.CSS_SELECTOR, "#subscriptions tr[data-id]"):
            cells = row.find_elements(By.TAG_NAME, "td")
            found[cells[0].text] = (str(row.get_attribute("data-state")), cells[2].text)
        return found

    await run(sign_in_with_token, browser, stack.api_url, manager, "/console/subscribers")
    assert await run(subscribe_in_the_form, "webhook", hook_url) == f"{hook_url} subscribed"
    assert await run(subscribe_in_the_form, "e-mail", mail_to) == (
        f"{mail_to} subscribed: a confirmation e-mail is on its way"
    )
    listed = await run(rows)
    assert listed[hook_url] == ("confirmed", "sp-pay")
    assert listed[mail_to] == ("pending", "sp-pay")
    await mailbox.wait_for(mail_to, "Confirm your subscription")
    # Bad input comes back naming the field.
    refused = await run(subscribe_in_the_form, "webhook", "ftp://x.example.com")
    assert refused.startswith("400") and "address" in refused, refused

    async with client(stack) as admin:
        made = {s["address"]: s for s in (await admin.get(ROUTE)).json()["subscriptions"]}
    assert made[hook_url]["created_by"] == "sp-manager"  # the signed-in person

    # A responder of the team manages none, and may not add one.
    await run(sign_in_with_token, browser, stack.api_url, responder, "/console/subscribers")
    assert hook_url not in await run(rows)
    denied = await run(subscribe_in_the_form, "webhook", hook_url + "/2")
    assert denied.startswith("403"), denied

    # The manager deletes both.
    await run(sign_in_with_token, browser, stack.api_url, manager, "/console/subscribers")
    for sub_id in (made[hook_url]["subscription_id"], made[mail_to]["subscription_id"]):

        def delete(sub_id: str = sub_id) -> str:
            browser.get(f"{stack.api_url}/console/subscribers")
            post_form(browser, f"tr[data-id='{sub_id}'] button")
            return flash(browser)

        assert await run(delete) == "Subscription deleted"
    assert not {hook_url, mail_to} & set(await run(rows))
