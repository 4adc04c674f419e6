"""Signed approve/reject links for automation actions that wait for approval: the token
names the rule; who escalation asks, and the messages notification sends them; what such a
message renders; and the HTTP handler (GET offers a form, only POST decides, as the
person the link was sent to; a decided or expired approval answers 409) against fakes."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2, oncall_service_pb2
from tocsin_common.automation import approval as approvals
from tocsin_common.automation.approval import Approval
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.timeutil import set_timestamp
from tocsin_escalation import lifecycle
from tocsin_escalation.escalator import automation_record
from tocsin_escalation.lifecycle import EscalationState
from tocsin_notification.automation import ask_requests
from tocsin_notification.http_api import APPROVAL_STATE_HEADER, LinkHandler, make_app
from tocsin_notification.links import (
    KeyRing,
    LinkClaim,
    LinkError,
    LinkKey,
    LinkOutcome,
    LinkProblem,
    LinkSigner,
    approval_outcome,
)
from tocsin_notification.pipeline import Job
from tocsin_notification.pipeline.render_stage import RenderStage
from tocsin_notification.providers.webhook import payload
from tocsin_notification.render import Renderer

E = incident_pb2
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SIGNER = LinkSigner(KeyRing((LinkKey("k1", b"s" * 40),)), HOUR)

CONFIG = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: web, name: Web, escalation_policy: ladder}
    users:
      - id: alice
        name: Alice
        email: alice@example.com
        contact_methods:
          - {id: hook, type: webhook, address: "http://x/alice"}
          - {id: mail, type: email, address: alice@example.com}
        notification_rules:
          high: [{delay: 0s, contact_method: hook}, {delay: 5m, contact_method: mail}]
      - id: bob
        name: Bob
        email: bob@example.com
        contact_methods: [{id: mail, type: email, address: bob@example.com}]
        notification_rules:
          high: [{delay: 2m, contact_method: mail}]
    escalation_policies:
      - id: ladder
        name: Ladder
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
          - {delay: 10m, targets: [{type: user, id: bob}]}
    automation:
      rules:
        - id: restart
          matchers: ['service="web"']
          "on": [triggered, "level 2"]
          requires_approval: true
          approval_ttl: 30m
          action: {type: http, url: "https://runner.example.com/job/secret-path", signed: false}
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


def incident() -> incident_pb2.Incident:
    found = E.Incident(
        incident_id="inc-1",
        service_id="web",
        title="Disk full",
        status=E.INCIDENT_STATUS_TRIGGERED,
        urgency=E.URGENCY_HIGH,
        severity=alert_pb2.SEVERITY_CRITICAL,
        escalation_policy_id="ladder",
    )
    set_timestamp(found.created_at, T0)
    return found


# --- tokens ----------------------------------------------------------------------------------


def test_an_approve_link_names_its_rule_and_only_such_a_link_does() -> None:
    token = SIGNER.token("approve", "inc-1", "web", "alice", T0, "restart")
    claim = SIGNER.verify(token, T0)
    assert (claim.action, claim.rule_id, claim.user_id) == ("approve", "restart", "alice")
    assert claim.decides_approval
    ack = SIGNER.verify(SIGNER.token("acknowledge", "inc-1", "web", "alice", T0), T0)
    assert not ack.decides_approval and ack.rule_id == ""
    with pytest.raises(ValueError, match="rule_id"):
        SIGNER.token("reject", "inc-1", "web", "alice", T0)
    with pytest.raises(ValueError, match="rule_id"):
        SIGNER.token("resolve", "inc-1", "web", "alice", T0, "restart")
    # A token signed for approve without a rule (not one Tocsin makes) is refused.
    forged = SIGNER._mac  # the signer's own MAC, to sign a crafted payload
    raw = json.dumps({"a": "approve", "i": "inc-1", "s": "web", "u": "a", "e": 2**40}).encode()
    body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(LinkError) as e:
        SIGNER.verify(f"k1.{body}.{forged('k1', body)}", T0)
    assert e.value.problem is LinkProblem.TAMPERED


def test_an_approval_link_acts_only_while_one_firing_is_pending() -> None:
    assert approval_outcome(["pending"]) is LinkOutcome.ACT
    assert approval_outcome(["expired", "pending"]) is LinkOutcome.ACT
    for states in (["approved"], ["rejected"], ["expired"], ["approved", "expired"]):
        assert approval_outcome(states) is LinkOutcome.MOOT


# --- whom escalation asks, and the messages notification sends -------------------------------


def test_a_waiting_action_asks_who_is_on_call_at_its_level_by_their_first_methods(
    config: TocsinConfig,
) -> None:
    state = EscalationState(run="r1", policy_id="ladder")
    effects = lifecycle.on_event(
        config,
        E.IncidentEvent(event_id="ev-1", type=E.INCIDENT_EVENT_TYPE_TRIGGERED, incident=incident()),
        state,
        T0,
        {},
    )
    gated = [a for a in effects.actions if a.requires_approval]
    # Triggered (level 1 on call: alice) and level 1's own planning (rule fires on
    # "level 2" only there): alice, by the method her rules use at once.
    assert [a.trigger for a in gated] == ["triggered"]
    assert gated[0].approvers == (("alice", "hook"),)
    level2 = lifecycle.page_level(config, incident(), state, 2, 0, T0, T0, {})
    [action] = level2.actions
    assert action.trigger == "level 2"
    assert action.approvers == (("bob", "mail"),)  # no rule at once: his first one's
    _, _, request = automation_record(incident(), action, T0)
    assert isinstance(request, notification_pb2.NotificationRequest)
    assert [(a.user_id, a.contact_method_id) for a in request.automation.approvers] == [
        ("bob", "mail")
    ]


def waiting_request() -> notification_pb2.NotificationRequest:
    request = notification_pb2.NotificationRequest(
        request_id="r1",
        idempotency_key="automation/inc-1/restart/level-2",
        incident=incident(),
        urgency=E.URGENCY_HIGH,
        automation=notification_pb2.AutomationAction(
            rule_id="restart",
            trigger="level 2",
            method="POST",
            url="https://runner.example.com/job/secret-path",
            requires_approval=True,
            approval_ttl_ms=1_800_000,
            approvers=[
                notification_pb2.Approver(user_id="alice", contact_method_id="hook"),
                notification_pb2.Approver(user_id="bob", contact_method_id="mail"),
            ],
        ),
    )
    return request


def pending() -> Approval:
    return approvals.request(
        "automation/inc-1/restart/level-2", "restart", "inc-1", T0, timedelta(minutes=30)
    )


def test_each_approver_gets_a_message_of_its_own_key_naming_what_waits() -> None:
    asks = ask_requests(waiting_request(), pending())
    assert [(a.user_id, a.contact_method_id) for a in asks] == [
        ("alice", "hook"),
        ("bob", "mail"),
    ]
    assert asks[0].idempotency_key == "automation/inc-1/restart/level-2/ask/alice/hook"
    assert len({a.idempotency_key for a in asks}) == 2
    ask = asks[0].approval_ask
    assert (ask.rule_id, ask.trigger) == ("restart", "level 2")
    assert ask.action == "POST https://runner.example.com/…"  # the path may be a secret
    assert ask.expires_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=30)
    assert not asks[0].HasField("automation")  # delivered as a page, never run
    assert asks[0].incident.incident_id == "inc-1"
    # The same firing asks the same messages again (a redelivery: duplicates downstream).
    again = ask_requests(waiting_request(), pending())
    assert [a.idempotency_key for a in again] == [a.idempotency_key for a in asks]


def test_the_message_carries_approve_and_reject_links_instead_of_ack_and_resolve() -> None:
    clock = FakeClock(T0)
    stage = RenderStage(Renderer(), SIGNER, "https://tocsin.example.com", clock)
    ask = ask_requests(waiting_request(), pending())[0]
    line = stage.line(Job(ask))
    assert line.ack_url == "" and line.resolve_url == ""
    approve = SIGNER.verify(line.approve_url.rsplit("/", 1)[1], clock.now())
    reject = SIGNER.verify(line.reject_url.rsplit("/", 1)[1], clock.now())
    assert (approve.action, approve.rule_id, approve.user_id) == ("approve", "restart", "alice")
    assert (reject.action, reject.incident_id) == ("reject", "inc-1")
    assert line.ask == (
        "rule restart (level 2): POST https://runner.example.com/…, until 2026-01-05T12:30:00+00:00"
    )
    subject, text = Renderer().render("email", (line,))
    assert subject.startswith("[APPROVAL] [HIGH] web: Disk full")
    assert f"Approve: {line.approve_url}" in text and f"Reject:  {line.reject_url}" in text
    assert "Acknowledge" not in text
    for channel in ("slack", "teams", "sms"):
        _, text = Renderer().render(channel, (line,))
        assert "Approve" in text and "Reject" in text and "Ack" not in text, channel
    _, voice = Renderer().render("voice", (line,))
    assert "approve or reject" in voice
    body = payload(stage.page([Job(ask)], CONTACT))  # what a webhook receiver reads
    assert body["event"] == "automation.approval_requested"
    assert set(body["links"]) == {"approve", "reject"}
    # A page keeps its acknowledge/resolve links.
    page_line = stage.line(Job(notification_pb2.NotificationRequest(incident=incident())))
    assert page_line.ack_url and not page_line.approve_url


def test_approval_links_live_as_long_as_the_approval_waits() -> None:
    """An approval_ttl longer than links.ttl (SIGNER's: one hour) keeps its links working
    until the approval expires; a shorter one leaves them at links.ttl (a late click then
    hears that the approval expired, 409, rather than that the link did)."""
    clock = FakeClock(T0)
    stage = RenderStage(Renderer(), SIGNER, "https://tocsin.example.com", clock)
    ask = ask_requests(waiting_request(), pending())[0]
    set_timestamp(ask.approval_ask.expires_at, T0 + 48 * HOUR)
    line = stage.line(Job(ask))
    for url in (line.approve_url, line.reject_url):
        token = url.rsplit("/", 1)[1]
        assert SIGNER.verify(token, T0 + 47 * HOUR).expires_at == int((T0 + 48 * HOUR).timestamp())
        with pytest.raises(LinkError) as late:
            SIGNER.verify(token, T0 + 48 * HOUR)
        assert late.value.problem is LinkProblem.EXPIRED
    short = ask_requests(waiting_request(), pending())[0]  # expires after 30 minutes
    token = stage.line(Job(short)).approve_url.rsplit("/", 1)[1]
    assert SIGNER.verify(token, T0).expires_at == int((T0 + HOUR).timestamp())
    # A page's acknowledge link keeps links.ttl.
    page = stage.line(Job(notification_pb2.NotificationRequest(incident=incident())))
    with pytest.raises(LinkError):
        SIGNER.verify(page.ack_url.rsplit("/", 1)[1], T0 + 2 * HOUR)


CONTACT = oncall_service_pb2.ContactMethod(user_id="alice", type="webhook", address="http://x")


# --- the HTTP handler ------------------------------------------------------------------------


class FakeApprovals:
    """The rule's firings on the incident, decided as AutomationRunner would."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.firings_: list[Approval] = [pending()]
        self.decisions: list[tuple[str, str, str]] = []

    async def firings(self, claim: LinkClaim) -> list[Approval]:
        return [approvals.current(f, self.clock.now()) for f in self.firings_]

    async def decide(self, claim: LinkClaim, peer: str) -> list[Approval]:
        verdict: Literal["approve", "reject"] = "approve" if claim.action == "approve" else "reject"
        now = self.clock.now()
        self.firings_ = [approvals.decide(f, verdict, claim.user_id, now) for f in self.firings_]
        self.decisions.append((claim.action, claim.rule_id, claim.user_id))
        return self.firings_


class NoIncidents:
    async def Get(self, request: object, timeout: float | None = None) -> incident_pb2.Incident:
        raise AssertionError("an approval link reads the approval, not the incident")

    async def send(self, claim: LinkClaim, peer: str) -> None:
        raise AssertionError("an approval link sends no incident command")


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestClient, FakeApprovals, FakeClock]]:
    clock = FakeClock(T0)
    fake = FakeApprovals(clock)
    handler = LinkHandler(SIGNER, NoIncidents(), NoIncidents(), clock, fake)
    client = TestClient(TestServer(make_app(handler)))
    await client.start_server()
    yield client, fake, clock
    await client.close()


def path(action: str, clock: FakeClock, user: str = "alice") -> str:
    return f"/v1/links/{SIGNER.token(action, 'inc-1', 'web', user, clock.now(), 'restart')}"


async def test_get_offers_a_form_and_only_post_decides_as_the_link_s_person(
    server: tuple[TestClient, FakeApprovals, FakeClock],
) -> None:
    client, fake, clock = server
    approve = path("approve", clock)
    for method in (client.get, client.head):
        r = await method(approve)
        assert r.status == 200
    r = await client.get(approve)
    text = await r.text()
    assert '<form method="post">' in text and "<script" not in text
    assert "restart" in text and "inc-1" in text and "as alice" in text
    assert fake.decisions == []
    r = await client.post(approve)
    assert r.status == 200 and "approved by alice" in await r.text()
    assert fake.decisions == [("approve", "restart", "alice")]
    assert fake.firings_[0].decided_by == "alice"
    # Decided: the same link, another person's reject link and its confirm page: 409.
    for method, link in (
        (client.post, approve),
        (client.post, path("reject", clock, "bob")),
        (client.get, path("reject", clock, "bob")),
    ):
        r = await method(link)
        assert r.status == 409, link
        assert r.headers[APPROVAL_STATE_HEADER] == "approved"
        assert "already approved by alice" in await r.text()
    assert len(fake.decisions) == 1


async def test_an_expired_approval_answers_409_and_decides_nothing(
    server: tuple[TestClient, FakeApprovals, FakeClock],
) -> None:
    client, fake, clock = server
    reject = path("reject", clock)
    clock.advance(31 * 60)
    r = await client.post(reject)
    assert r.status == 409 and r.headers[APPROVAL_STATE_HEADER] == "expired"
    assert fake.decisions == []
    fake.firings_ = []
    assert (await client.get(reject)).status == 404
