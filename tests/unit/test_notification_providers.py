"""Each provider against a real local peer that records every request and can be told to
fail (500/429/400), hang or answer slowly; SMTP against aiosmtpd (plain, AUTH, STARTTLS)."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from opentelemetry import context as otel_context
from opentelemetry import trace
from tocsin_common.clock import FakeClock
from tocsin_common.config.model import NotificationSettings
from tocsin_common.outgoing import DestinationPolicy
from tocsin_notification.breaker import BreakerRegistry
from tocsin_notification.pipeline.send_stage import SendStage
from tocsin_notification.providers import DeliveryError, IncidentLine, Page, discover
from tocsin_notification.providers.email import EmailProvider
from tocsin_notification.providers.http import HttpClient
from tocsin_notification.providers.slack import SlackProvider
from tocsin_notification.providers.teams import TeamsProvider
from tocsin_notification.providers.twilio import SmsProvider, VoiceProvider
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, WebhookProvider, verify

from tests.integration.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "unit-test-webhook-signing-secret-0123456789"
# The local peers run on 127.0.0.1: allow-listed, as an operator would for a local receiver.
LOCAL = DestinationPolicy(["127.0.0.1"])


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Peer:
    """A recording HTTP peer: `status` to answer with, `delay` to answer slowly (or hang)."""

    port: int
    status: int = 200
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Recorded(request.method, request.path, dict(request.headers), await request.read())
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"sid": "SM123"}, status=self.status)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer(free_port())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", p.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", p.port).start()
    yield p
    await runner.cleanup()


def page(address: str, **kw: Any) -> Page:
    line = IncidentLine(
        "inc-1",
        "checkout",
        "checkout 5xx above 5%",
        "triggered",
        "high",
        "critical",
        "2026-01-01T08:30:00+00:00",
        "https://wiki/rb",
        "http://t/ack",
        "http://t/res",
    )
    fields: dict[str, Any] = {
        "incident_id": "inc-1",
        "service_id": "checkout",
        "title": "checkout 5xx above 5%",
        "status": "triggered",
        "urgency": "high",
        "user_id": "alice",
        "user_name": "Alice",
        "address": address,
        "idempotency_key": "inc-1:1:0:alice:0",
        "ack_url": "http://t/ack",
        "resolve_url": "http://t/res",
        "runbook_url": "https://wiki/rb",
        "subject": "[HIGH] checkout: checkout 5xx above 5%",
        "text": "checkout 5xx above 5%\nAck: http://t/ack",
        "incidents": (line,),
    }
    fields.update(kw)
    return Page(**fields)


# --- webhook -----------------------------------------------------------------------------


async def test_webhook_is_signed_so_a_receiver_can_verify_it(
    peer: Peer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As deployed: the secret in a file named by <variable>_FILE, the peer allow-listed.
    (tmp_path / "hook-secret").write_text(SECRET + "\n")
    monkeypatch.setenv("HOOK_SECRET_FILE", str(tmp_path / "hook-secret"))
    settings = NotificationSettings.model_validate(
        {"webhook": {"signing_secret_env": "HOOK_SECRET"}, "outgoing": {"allow": ["127.0.0.1"]}}
    )
    provider = WebhookProvider.from_settings(settings)
    try:
        assert await provider.send(page(f"{peer.url}/hook")) == "HTTP 200"
    finally:
        await provider.close()
    got = peer.requests[0]
    # What a receiver does: recompute HMAC-SHA256(secret, f"{t}.{raw body}").
    assert verify(SECRET.encode(), got.body, got.headers[SIGNATURE_HEADER], now=time.time())
    assert not verify(b"wrong", got.body, got.headers[SIGNATURE_HEADER], now=time.time())
    body = got.json()
    assert body["links"] == {
        "acknowledge": "http://t/ack",
        "resolve": "http://t/res",
        "runbook": "https://wiki/rb",
    }
    assert body["incidents"][0]["id"] == "inc-1"
    assert got.headers["Idempotency-Key"] == "inc-1:1:0:alice:0"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
async def test_http_failures_say_whether_to_retry(peer: Peer, status: int, retryable: bool) -> None:
    peer.status = status
    for provider in (
        WebhookProvider(secret=SECRET, destinations=LOCAL),
        SlackProvider(destinations=LOCAL),
        TeamsProvider(destinations=LOCAL),
    ):
        try:
            with pytest.raises(DeliveryError) as e:
                await provider.send(page(f"{peer.url}/x"))
            assert e.value.retryable is retryable, (provider, status)
        finally:
            await provider.close()


async def test_a_hanging_peer_hits_the_attempt_timeout_and_opens_the_breaker(peer: Peer) -> None:
    peer.delay = 5
    clock = FakeClock()
    stage = SendStage(BreakerRegistry(clock, failure_threshold=2, reset_timeout_s=30), 0.2)
    provider = WebhookProvider(secret=SECRET, destinations=LOCAL)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DeliveryError) as e:
                await stage.send(provider, page(f"{peer.url}/slow"))
            assert e.value.retryable and "timeout" in str(e.value)
            assert time.monotonic() - started < 2
        # Open: the next attempt fails fast and never reaches the peer.
        seen = len(peer.requests)
        with pytest.raises(DeliveryError) as e:
            await stage.send(provider, page(f"{peer.url}/slow"))
        assert "circuit open" in str(e.value) and len(peer.requests) == seen
        # Half-open after the reset timeout: one probe; it succeeds and closes the breaker.
        clock.advance(30)
        peer.delay = 0
        assert await stage.send(provider, page(f"{peer.url}/ok")) == "HTTP 200"
    finally:
        await provider.close()


async def test_a_slow_peer_within_the_timeout_is_fine(peer: Peer) -> None:
    peer.delay = 0.3
    stage = SendStage(BreakerRegistry(FakeClock()), 2)
    provider = SlackProvider(destinations=LOCAL)
    try:
        assert await stage.send(provider, page(f"{peer.url}/slack")) == "HTTP 200"
    finally:
        await provider.close()


async def test_connection_refused_is_retryable() -> None:
    provider = WebhookProvider(secret=SECRET, destinations=LOCAL)
    try:
        with pytest.raises(DeliveryError) as e:
            await provider.send(page(f"http://127.0.0.1:{free_port()}/nobody"))
        assert e.value.retryable
    finally:
        await provider.close()


@pytest.mark.parametrize("spans", [True, False])
async def test_http_requests_carry_the_trace_with_or_without_a_span_of_their_own(
    peer: Peer, spans: bool
) -> None:
    # Without exported spans the client opens none, but the page's trace context still
    # goes out, and the answer is classified as before.
    client = HttpClient("webhook", spans=spans, destinations=LOCAL)
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    parent = trace.NonRecordingSpan(
        trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    token = otel_context.attach(trace.set_span_in_context(parent))
    try:
        assert await client.post(f"{peer.url}/hook", data=b"{}") == "HTTP 200"
        peer.status = 503
        with pytest.raises(DeliveryError) as e:
            await client.post(f"{peer.url}/hook", data=b"{}")
        assert e.value.retryable
    finally:
        otel_context.detach(token)
        await client.close()
    for got in peer.requests:
        assert got.headers["traceparent"].split("-")[1] == format(trace_id, "032x")


# --- Slack and Teams ---------------------------------------------------------------------


async def test_slack_gets_blocks_with_action_buttons(peer: Peer) -> None:
    provider = SlackProvider(destinations=LOCAL)
    try:
        await provider.send(page(f"{peer.url}/services/T/B/X"))
    finally:
        await provider.close()
    body = peer.requests[0].json()
    assert peer.requests[0].path == "/services/T/B/X"
    assert body["text"].startswith("[HIGH] checkout")
    assert body["blocks"][1]["text"]["type"] == "mrkdwn"
    urls = [b["url"] for b in body["blocks"][2]["elements"]]
    assert urls == ["http://t/ack", "http://t/res", "https://wiki/rb"]


async def test_teams_gets_a_message_card(peer: Peer) -> None:
    provider = TeamsProvider(destinations=LOCAL)
    try:
        await provider.send(page(f"{peer.url}/webhookb2/x"))
    finally:
        await provider.close()
    card = peer.requests[0].json()
    assert card["@type"] == "MessageCard" and card["themeColor"] == "D70000"
    assert [a["name"] for a in card["potentialAction"]] == ["Acknowledge", "Resolve", "Runbook"]
    assert card["potentialAction"][0]["targets"][0]["uri"] == "http://t/ack"


# --- Twilio-compatible SMS and voice -----------------------------------------------------


def _twilio(
    cls: type[SmsProvider] | type[VoiceProvider], peer: Peer
) -> SmsProvider | VoiceProvider:
    return cls(
        base_url=peer.url,
        account_sid="AC1",
        auth_token="tok",
        from_number="+15550000000",
        destinations=LOCAL,
    )


async def test_sms_posts_a_form_with_basic_auth(peer: Peer) -> None:
    provider = _twilio(SmsProvider, peer)
    try:
        assert await provider.send(page("+15551234567")) == "HTTP 200"
    finally:
        await provider.close()
    got = peer.requests[0]
    assert got.path == "/2010-04-01/Accounts/AC1/Messages.json"
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:tok").decode()
    assert got.form() == {
        "To": "+15551234567",
        "From": "+15550000000",
        "Body": "checkout 5xx above 5%\nAck: http://t/ack",
    }


async def test_voice_posts_twiml_to_calls(peer: Peer) -> None:
    provider = _twilio(VoiceProvider, peer)
    try:
        await provider.send(page("+15551234567", text="Disk <full> & on fire"))
    finally:
        await provider.close()
    got = peer.requests[0]
    assert got.path == "/2010-04-01/Accounts/AC1/Calls.json"
    assert (
        "<Say" in got.form()["Twiml"] and "Disk &lt;full&gt; &amp; on fire" in got.form()["Twiml"]
    )


async def test_twilio_failures(peer: Peer) -> None:
    provider = _twilio(SmsProvider, peer)
    try:
        peer.status = 429
        with pytest.raises(DeliveryError) as e:
            await provider.send(page("+15551234567"))
        assert e.value.retryable
        peer.status = 400
        with pytest.raises(DeliveryError) as e:
            await provider.send(page("+15551234567"))
        assert not e.value.retryable
        with pytest.raises(DeliveryError) as e:
            await provider.send(page("not-a-number"))
        assert not e.value.retryable
    finally:
        await provider.close()


# --- email (aiosmtpd) --------------------------------------------------------------------


class Inbox:
    def __init__(self, reply: str = "250 OK") -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reply = reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.reply


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"tocsin", b"pw")
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


async def test_email_plain(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    provider = EmailProvider(host="127.0.0.1", port=controller.port, sender="pager@tocsin.test")
    assert await provider.send(page("alice@example.com")) == "SMTP 250"
    mail_from, rcpt, content = inbox.messages[0]
    assert (mail_from, rcpt) == ("pager@tocsin.test", ["alice@example.com"])
    assert b"Subject: [HIGH] checkout: checkout 5xx above 5%" in content
    assert b"http://t/ack" in content


async def test_email_auth_and_refusal() -> None:
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticator,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        good = EmailProvider(
            host="127.0.0.1", port=controller.port, username="tocsin", password="pw"
        )
        assert await good.send(page("alice@example.com")) == "SMTP 250"
        inbox.reply = "550 no such mailbox"
        with pytest.raises(DeliveryError) as e:
            await good.send(page("nobody@example.com"))
        assert not e.value.retryable
        inbox.reply = "451 try again later"
        with pytest.raises(DeliveryError) as e:
            await good.send(page("alice@example.com"))
        assert e.value.retryable
    finally:
        controller.stop()


async def test_email_starttls_with_auth(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: ASYNC221 - test set-up
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_tls,
        require_starttls=True,
        authenticator=_authenticator,
    )
    controller.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        provider = EmailProvider(
            host="127.0.0.1",
            port=controller.port,
            starttls=True,
            username="tocsin",
            password="pw",
            tls_context=client_tls,
        )
        assert await provider.send(page("alice@example.com")) == "SMTP 250"
        assert len(inbox.messages) == 1
        plain = EmailProvider(host="127.0.0.1", port=controller.port)  # no STARTTLS: refused
        with pytest.raises(DeliveryError):
            await plain.send(page("alice@example.com"))
    finally:
        controller.stop()


async def test_email_server_down_is_retryable() -> None:
    provider = EmailProvider(host="127.0.0.1", port=free_port())
    with pytest.raises(DeliveryError) as e:
        await provider.send(page("alice@example.com"))
    assert e.value.retryable


# --- plugins -----------------------------------------------------------------------------


def test_every_builtin_channel_is_an_entry_point() -> None:
    assert {"email", "slack", "teams", "webhook", "sms", "voice"} <= set(discover())


async def test_a_third_party_provider_package_is_discovered_and_used(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(  # noqa: ASYNC221 - test set-up
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
         "--target", str(target), str(ROOT / "tests/fixtures/third_party_provider")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    try:
        importlib.invalidate_caches()
        found = discover()
        assert "pigeon" in found
        provider = found["pigeon"]()
        assert await provider.send(page("loft-7")) == "pigeon flew to loft-7"
        assert {"webhook", "email"} <= set(found)  # the built-ins are still there
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("pigeon_provider", None)
