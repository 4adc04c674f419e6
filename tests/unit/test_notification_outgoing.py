"""Outgoing HTTP safety of the notification providers, against real local servers:
destinations refused before connecting, no redirects, webhook signing required unless
`unsigned: true`, Slack/Teams markup escaped, and no secret in spans, errors or logs."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tocsin_common.config import parse_config
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.outgoing_http import guarded_connector, redacted_url
from tocsin_common.secrets import SecretError
from tocsin_notification.providers import http as http_module
from tocsin_notification.providers.base import DeliveryError, IncidentLine, Page
from tocsin_notification.providers.http import HttpClient
from tocsin_notification.providers.slack import SlackProvider, blocks
from tocsin_notification.providers.teams import TeamsProvider, message_card
from tocsin_notification.providers.twilio import SmsProvider
from tocsin_notification.providers.webhook import (
    SIGNATURE_HEADER,
    WebhookProvider,
    require_signing_secret,
)
from tocsin_notification.render import Renderer

from tests.integration.harness import free_port

SECRET = "unit-test-webhook-signing-secret-0123456789"
LOCAL = DestinationPolicy(["127.0.0.1"])
HOSTILE = "<!channel> *x* <http://evil|click> [click](http://evil) & co"


class Server:
    """A local HTTP server recording the paths it was asked for; /redirect answers 302."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        self.headers.append(dict(request.headers))
        self.bodies.append(await request.read())
        if request.path.startswith("/redirect"):
            return web.Response(status=302, headers={"Location": f"{self.url}/landed"})
        if request.path.startswith("/echo-url"):
            return web.Response(status=404, text=f"no such hook: {request.url}")
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    await s.stop()


def page(address: str, title: str = "disk full", **kw: Any) -> Page:
    line = IncidentLine(
        "inc-1", "checkout", title, "triggered", "high", "critical", "", "", "http://t/ack", ""
    )
    fields: dict[str, Any] = {
        "incident_id": "inc-1",
        "service_id": "checkout",
        "title": title,
        "status": "triggered",
        "urgency": "high",
        "user_id": "alice",
        "user_name": "Alice",
        "address": address,
        "idempotency_key": "inc-1:1:0:alice:0",
        "subject": f"[HIGH] checkout: {title}",
        "text": title,
        "incidents": (line,),
    }
    fields.update(kw)
    return Page(**fields)


# --- destinations ------------------------------------------------------------------------


async def test_a_request_to_127_0_0_1_is_refused_without_an_allow_list(server: Server) -> None:
    for provider in (
        WebhookProvider(secret=SECRET),
        SlackProvider(),
        TeamsProvider(),
        SmsProvider(base_url=server.url, account_sid="AC1", from_number="+15550000000"),
    ):
        try:
            with pytest.raises(DeliveryError) as e:
                address = "+15551234567" if provider.channel == "sms" else f"{server.url}/hook"
                await provider.send(page(address))
        finally:
            await provider.close()
        assert not e.value.retryable, provider.channel  # final: a retry cannot change it
        assert "destination 127.0.0.1 port" in str(e.value) and "loopback" in str(e.value)
        assert "notification.outgoing.allow" in str(e.value)
    assert server.paths == []  # the server, listening, never heard of it
    # Allow-listed, the same request goes through.
    allowed = WebhookProvider(secret=SECRET, destinations=LOCAL)
    try:
        assert await allowed.send(page(f"{server.url}/hook")) == "HTTP 200"
    finally:
        await allowed.close()
    assert server.paths == ["/hook"]


async def test_the_metadata_address_is_refused_before_any_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No packet may leave: sock_connect (every TCP connect of aiohttp goes through it)
    # must never be called, for the literal address nor for a name resolving to it.
    loop = asyncio.get_running_loop()
    connects: list[Any] = []

    async def no_connect(sock: socket.socket, address: Any) -> None:
        connects.append(address)
        raise AssertionError(f"connect attempted to {address}")

    monkeypatch.setattr(loop, "sock_connect", no_connect)
    provider = WebhookProvider(secret=SECRET)
    try:
        with pytest.raises(DeliveryError) as e:
            await provider.send(page("http://169.254.169.254/latest/meta-data/"))
    finally:
        await provider.close()
    assert not e.value.retryable and "link-local" in str(e.value)
    assert "169.254.169.254 port 80" in str(e.value)
    assert connects == []


class RebindingResolver(AbstractResolver):
    """A DNS answer pointing a harmless-looking name at the metadata service."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "169.254.169.254",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_a_refused_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    connects: list[Any] = []

    async def no_connect(sock: socket.socket, address: Any) -> None:
        connects.append(address)
        raise AssertionError(f"connect attempted to {address}")

    monkeypatch.setattr(loop, "sock_connect", no_connect)
    connector = guarded_connector(DestinationPolicy(), resolver=RebindingResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as e:
            await session.post("http://hooks.example.com/x", allow_redirects=False)
    assert "hooks.example.com (169.254.169.254)" in str(e.value.os_error)
    assert connects == []


# --- redirects ---------------------------------------------------------------------------


async def test_redirects_are_not_followed(server: Server) -> None:
    for provider in (
        WebhookProvider(secret=SECRET, destinations=LOCAL),
        SlackProvider(destinations=LOCAL),
        TeamsProvider(destinations=LOCAL),
    ):
        try:
            with pytest.raises(DeliveryError) as e:
                await provider.send(page(f"{server.url}/redirect"))
        finally:
            await provider.close()
        assert not e.value.retryable
        assert str(e.value) == "HTTP 302: redirects are not followed"
    assert "/landed" not in server.paths and server.paths.count("/redirect") == 3


# --- webhook signing ---------------------------------------------------------------------


async def test_a_webhook_page_without_a_secret_goes_only_to_an_unsigned_method(
    server: Server,
) -> None:
    provider = WebhookProvider(destinations=LOCAL)  # no secret
    try:
        with pytest.raises(DeliveryError) as e:
            await provider.send(page(f"{server.url}/signed"))
        assert not e.value.retryable and "not `unsigned: true`" in str(e.value)
        assert server.paths == []
        assert await provider.send(page(f"{server.url}/open", unsigned=True)) == "HTTP 200"
    finally:
        await provider.close()
    assert server.paths == ["/open"] and SIGNATURE_HEADER not in server.headers[0]


async def test_a_secret_signs_even_an_unsigned_method(server: Server) -> None:
    provider = WebhookProvider(secret=SECRET, destinations=LOCAL)
    try:
        await provider.send(page(f"{server.url}/open", unsigned=True))
    finally:
        await provider.close()
    assert SIGNATURE_HEADER in server.headers[0]


CONFIG = """
version: 1
users:
  - id: alice
    name: Alice
    email: alice@example.com
    contact_methods:
      - {id: hook, type: webhook, address: "https://hooks.example.com/a"%s}
      - {id: mail, type: email, address: alice@example.com}
"""


def test_notification_refuses_to_start_without_the_secret_of_a_signed_webhook(
    tmp_path: Path,
) -> None:
    signed = parse_config(CONFIG % "")
    with pytest.raises(SecretError) as e:
        require_signing_secret(signed, {})
    assert "TOCSIN_WEBHOOK_SECRET: required" in str(e.value)
    assert "alice/hook" in str(e.value) and "unsigned: true" in str(e.value)
    with pytest.raises(SecretError, match="at least 32"):
        require_signing_secret(signed, {"TOCSIN_WEBHOOK_SECRET": "short"})
    (tmp_path / "s").write_text(SECRET + "\n")
    assert require_signing_secret(signed, {"TOCSIN_WEBHOOK_SECRET_FILE": str(tmp_path / "s")}) == (
        SECRET
    )
    # Every webhook unsigned: no secret needed (and one given is still used).
    unsigned = parse_config(CONFIG % ", unsigned: true")
    assert require_signing_secret(unsigned, {}) is None
    assert require_signing_secret(unsigned, {"TOCSIN_WEBHOOK_SECRET": SECRET}) == SECRET


# --- markup ------------------------------------------------------------------------------


def test_slack_markup_from_an_alert_title_is_escaped() -> None:
    line = IncidentLine(
        "inc-1",
        "checkout",
        HOSTILE,
        "triggered",
        "high",
        "critical",
        "",
        "https://wiki/rb|Acknowledge>",
        "http://t/ack",
        "http://t/res",
    )
    subject, text = Renderer().render("slack", (line,))
    assert "<!channel>" not in text and "<http://evil|click>" not in text
    assert "&lt;!channel&gt; *x* &lt;http://evil|click&gt;" in text and "&amp; co" in text
    # A runbook label cannot supply its own link text or close the link.
    assert "<https://wiki/rb%7CAcknowledge%3E|Runbook>" in text
    # The template's own links are still links.
    assert "<http://t/ack|Acknowledge>" in text
    body = blocks(page("https://hooks.slack.com/x", HOSTILE, subject=subject, text=text))
    assert body["text"].startswith("[HIGH] checkout: &lt;!channel&gt;")
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": subject}


def test_teams_markup_from_an_alert_title_is_escaped() -> None:
    line = IncidentLine(
        "inc-1",
        "checkout",
        HOSTILE + "\n# heading",
        "triggered",
        "high",
        "critical",
        "",
        "https://wiki/rb) [Acknowledge](http://evil",
        "http://t/ack",
        "http://t/res",
    )
    subject, text = Renderer().render("teams", (line,))
    assert "[click](http://evil)" not in text
    assert r"\[click\]\(http://evil\)" in text and r"\*x\*" in text
    assert "&lt;!channel&gt;" in text and "\n# heading" not in text
    assert "[Runbook](https://wiki/rb%29%20%5BAcknowledge%5D%28http://evil)" in text
    assert "[Acknowledge](http://t/ack)" in text  # the template's own link
    card = message_card(page("https://x.webhook.office.com/x", HOSTILE, subject=subject, text=text))
    for field in ("title", "summary"):
        assert "[click](http://evil)" not in card[field] and "<!channel>" not in card[field]


# --- secrets in spans, errors and logs ---------------------------------------------------


async def test_no_url_path_token_or_secret_in_spans_errors_or_logs(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    provider_ = TracerProvider()
    provider_.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(http_module, "tracer", lambda name: provider_.get_tracer(name))
    caplog.set_level(logging.DEBUG)
    hook_path = "/services/T0SECRET/B0SECRET/xoxb-path-token"
    token = "twilio-auth-token-0123456789abcdef"
    errors: list[str] = []
    providers: list[Any] = [
        WebhookProvider(secret=SECRET, destinations=LOCAL),
        SlackProvider(destinations=LOCAL),
        TeamsProvider(destinations=LOCAL),
    ]
    for provider in providers:
        provider._http._spans = True  # as when spans are exported
    sms = SmsProvider(
        base_url=server.url,
        account_sid="AC0SECRET",
        auth_token=token,
        from_number="+15550000000",
        destinations=LOCAL,
    )
    sms._http._spans = True
    try:
        for provider in providers:
            await provider.send(page(f"{server.url}{hook_path}?token=q0SECRET"))
            for failing in (f"{server.url}/echo-url{hook_path}", f"http://127.0.0.2:1{hook_path}"):
                with pytest.raises(DeliveryError) as e:
                    await provider.send(page(failing))
                errors.append(str(e.value))
        await sms.send(page("+15551234567"))
    finally:
        for provider in [*providers, sms]:
            await provider.close()
    assert server.paths[0] == hook_path  # the request itself carried the path
    spans = exporter.get_finished_spans()
    assert len(spans) == 10
    dumped = "\n".join(span.to_json() for span in spans)
    assert {span.attributes["url.full"] for span in spans if span.attributes} == {
        f"http://127.0.0.1:{server.port}/…",
        "http://127.0.0.2:1/…",
    }
    assert any(span.status.description and "HTTP 404" in span.status.description for span in spans)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (dumped, logs, *errors):
        for secret in ("0SECRET", "xoxb-path-token", token, SECRET, "Authorization", "Basic "):
            assert secret not in text, (secret, text[:2000])
    assert any("HTTP 404" in error for error in errors)


def test_redacted_url() -> None:
    assert redacted_url("https://hooks.slack.com/services/T/B/X?x=1") == "https://hooks.slack.com/…"
    assert redacted_url("http://127.0.0.1:9999/pages/a") == "http://127.0.0.1:9999/…"
    assert redacted_url("http://[::1]:80/a") == "http://[::1]:80/…"
    assert redacted_url("not a url") == "<URL without host>"


async def test_an_http_client_refuses_by_default() -> None:
    client = HttpClient("webhook", spans=False)
    try:
        with pytest.raises(DeliveryError) as e:
            await client.post("http://10.0.0.1:8080/x", data=b"{}")
    finally:
        await client.close()
    assert not e.value.retryable and "private address" in str(e.value)
