"""The status page's subscribers at every edge, without the other services: the link tokens
and the stored form (pure), what a subscriber receives (public fields only), escalation
handing each update to notification, notification's fan-out and delivery (e-mail with
List-Unsubscribe, signed webhook, an ended subscription skipped, a duplicate dropped), and
the REST routes and capability links of the api (401/403, 409 when moot, audited)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tocsin.v1 import incident_pb2, notification_pb2
from tocsin_api.app import create_app
from tocsin_api.deps import ApiState
from tocsin_api.settings import ApiSettings
from tocsin_common.auth.access import AuthFailure
from tocsin_common.auth.policy import Principal, PrincipalKind, Role
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.kafka import BadRecord
from tocsin_common.statuspage import notices
from tocsin_common.statuspage.store import SUBSCRIPTIONS_KEY, RedisSubscriptions
from tocsin_common.statuspage.subscriptions import (
    Subscription,
    SubscriptionError,
    confirm,
    decode,
    encode,
    lapsed,
    link_key,
    link_token,
    subscribe,
    unsubscribe,
)
from tocsin_common.timeutil import set_timestamp
from tocsin_escalation import lifecycle
from tocsin_escalation.escalator import notice_request
from tocsin_escalation.lifecycle import EscalationState
from tocsin_insight.facts import is_page
from tocsin_notification.delivery import parse
from tocsin_notification.idempotency import Claim
from tocsin_notification.pipeline import Job, Pipeline
from tocsin_notification.pipeline.retry_stage import RetryStage
from tocsin_notification.providers.base import DeliveryError, Page
from tocsin_notification.providers.email import EmailProvider
from tocsin_notification.providers.webhook import verify
from tocsin_notification.retry_policy import RetryPolicy
from tocsin_notification.subscribers import SubscriberDelivery

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = link_key("s" * 32)
API = "https://ops.example"
CONFIG = parse_config(
    textwrap.dedent(
        """\
        version: 1
        services:
          - {id: pay-svc, name: Payments svc, team: pay, escalation_policy: p}
          - {id: web-svc, name: Web svc, team: web, escalation_policy: p}
          - {id: lone-svc, name: Lone, escalation_policy: p}
        teams:
          - {id: pay, name: Pay, managers: [max], members: [rita]}
          - {id: web, name: Web, managers: [wes], members: [wes]}
        users:
          - {id: max, name: Max, email: max@example.com}
          - {id: rita, name: Rita, email: rita@example.com}
          - {id: wes, name: Wes, email: wes@example.com}
        escalation_policies:
          - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: max}]}]}
        status_page:
          enabled: true
          title: Acme status
          confirmation_ttl: 2h
          components:
            - {id: cmp-pay, name: Payments, services: [pay-svc]}
            - {id: cmp-web, name: Web shop, services: [web-svc, pay-svc]}
        """
    ),
    "tocsin.yaml",
)
INTERNAL = ["inc-internal-7", "pay-svc", "OOMKilled pay-db-3", "rita", "cmp-pay"]


def make(
    sid: str = "s1", kind: str = "email", address: str = "ana@example.com", **kw: Any
) -> Subscription:
    return subscribe(
        subscription_id=sid,
        kind=kind,
        address=address,
        components=kw.pop("components", ["cmp-pay"]),
        known_components=["cmp-pay", "cmp-web"],
        confirm_token=link_token(KEY, "confirm", sid),
        unsubscribe_token=link_token(KEY, "unsubscribe", sid),
        now=kw.pop("now", NOW),
        created_by="max",
    )


# --- pure ---------------------------------------------------------------------------


def test_link_tokens_are_keyed_per_purpose_and_subscription() -> None:
    token = link_token(KEY, "confirm", "s1")
    assert token == link_token(KEY, "confirm", "s1") and len(token) == 43
    others = {
        link_token(KEY, "unsubscribe", "s1"),
        link_token(KEY, "confirm", "s2"),
        link_token(link_key("t" * 32), "confirm", "s1"),
    }
    assert token not in others and len(others) == 3
    assert ("s" * 32).encode() != KEY  # derived, never the service secret itself
    with pytest.raises(SubscriptionError, match="service secret"):
        link_key("")
    sub = make()
    assert confirm(sub, token, NOW, timedelta(hours=1)).state == "confirmed"
    assert unsubscribe(sub, link_token(KEY, "unsubscribe", "s1"), NOW).state == "unsubscribed"


def test_the_stored_form_round_trips_and_holds_digests_only() -> None:
    sub = confirm(
        make(components=["cmp-pay", "cmp-web"]),
        link_token(KEY, "confirm", "s1"),
        NOW,
        timedelta(hours=1),
    )
    raw = encode(sub)
    assert decode(raw) == sub and decode(raw.encode()) == sub
    assert link_token(KEY, "unsubscribe", "s1") not in raw
    hook = make("h1", "webhook", "http://127.0.0.1:9999/hook", components=[])
    assert decode(encode(hook)) == hook and hook.state == "confirmed"
    for bad in ("{}", "not json", json.dumps({**json.loads(raw), "state": "gone"})):
        with pytest.raises(SubscriptionError, match="stored subscription"):
            decode(bad)


def notice(**kw: Any) -> notices.Notice:
    values: dict[str, Any] = {
        "update_id": "ev-1",
        "status": "identified",
        "title": "Card payments fail",
        "message": "A fix is rolling out.",
        "component_ids": ("cmp-pay", "cmp-web"),
        "posted_at": NOW,
        **kw,
    }
    return notices.Notice(**values)


def test_what_a_subscriber_receives_is_public_only() -> None:
    page = CONFIG.status_page
    assert notices.affected_components(page, "pay-svc") == ("cmp-pay", "cmp-web")
    assert notices.affected_components(page, "lone-svc") == ()
    off = page.model_copy(update={"enabled": False})
    assert notices.affected_components(off, "pay-svc") == ()
    names = notices.component_names(page, ["cmp-web", "cmp-pay", "gone"])
    assert names == ["Payments", "Web shop"]  # the config's order; a removed one left out
    links = notices.links_for(API + "/", KEY, "s1")
    assert (
        links.confirm == f"{API}/status/subscriptions/s1/confirm/{link_token(KEY, 'confirm', 's1')}"
    )
    subject, text = notices.update_email(
        notice(), names, "Acme status", f"{API}/status", links.unsubscribe
    )
    assert subject == "[Acme status] Identified: Card payments fail"
    assert "Affected: Payments, Web shop" in text and "A fix is rolling out." in text
    assert f"Unsubscribe: {links.unsubscribe}" in text and "2026-06-01 12:00 UTC" in text
    body = notices.webhook_body(
        notice(), names, "Acme status", f"{API}/status", "s1", links.unsubscribe
    )
    assert body["update"] == {
        "id": "ev-1",
        "status": "identified",
        "title": "Card payments fail",
        "message": "A fix is rolling out.",
        "components": ["Payments", "Web shop"],
        "posted_at": "2026-06-01T12:00:00Z",
    }
    assert body["subscription"] == {"id": "s1", "unsubscribe": links.unsubscribe}
    subject, text = notices.confirmation_email(
        "Acme status", [], links, timedelta(hours=2), f"{API}/status"
    )
    assert subject == "[Acme status] Confirm your subscription"
    assert "every component" in text and "within 2 hours" in text and links.confirm in text
    assert notices.fan_out_key("ev-1", "s1") == "status/ev-1/s1"
    two_lines = notice(title="Card payments\nfail  again")
    subject, _ = notices.update_email(two_lines, names, "Acme status", API, links.unsubscribe)
    assert subject == "[Acme status] Identified: Card payments fail again"
    # Insight leaves subscriber deliveries out of its paging facts.
    for channel in notices.CHANNELS:
        assert not is_page(notification_pb2.NotificationStatus(channel=channel))


class DictRedis:
    """The hash commands the store uses, over a dict."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}

    async def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    async def hset(self, key: str, field: str, value: str) -> int:
        self.hashes.setdefault(key, {})[field] = value
        return 1

    async def hdel(self, key: str, field: str) -> int:
        return 1 if self.hashes.get(key, {}).pop(field, None) is not None else 0

    async def hlen(self, key: str) -> int:
        return len(self.hashes.get(key, {}))


async def test_the_store_keeps_one_hash_of_subscriptions_and_skips_unreadable_ones() -> None:
    redis = DictRedis()
    store = RedisSubscriptions(redis)
    later = make("b", now=NOW + timedelta(minutes=1))
    await store.put(later)
    await store.put(make("a"))
    redis.hashes[SUBSCRIPTIONS_KEY]["broken"] = "{not json"
    assert [s.subscription_id for s in await store.all()] == ["a", "b"]  # oldest first
    assert await store.get("b") == later and await store.get("nope") is None
    assert await store.count() == 3
    assert await store.delete("a") and not await store.delete("a")
    assert set(redis.hashes[SUBSCRIPTIONS_KEY]) == {"b", "broken"}
    assert link_token(KEY, "confirm", "b") not in redis.hashes[SUBSCRIPTIONS_KEY]["b"]


# --- escalation: each update to notification, once ------------------------------------


def status_event(
    status: str = "identified", service: str = "pay-svc"
) -> incident_pb2.IncidentEvent:
    incident = incident_pb2.Incident(
        incident_id="inc-internal-7",
        service_id=service,
        title="OOMKilled pay-db-3",
        status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
        urgency=incident_pb2.URGENCY_HIGH,
        escalation_policy_id="p",
        assigned_user_id="rita",
    )
    event = incident_pb2.IncidentEvent(
        event_id="ev-1",
        type=incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED,
        incident=incident,
        actor="rita",
        status_update=incident_pb2.PublicStatusUpdate(
            status=status, message="A fix is rolling out.", public_title="Card payments fail"
        ),
    )
    set_timestamp(event.at, NOW)
    return event


@pytest.mark.parametrize("status", ["identified", "resolved"])
def test_escalation_hands_each_status_update_to_notification(status: str) -> None:
    effects = lifecycle.on_event(CONFIG, status_event(status), EscalationState(), NOW, {})
    (planned,) = effects.notices
    assert planned == notice(status=status)
    request = notice_request(planned, NOW)
    assert request.idempotency_key == "status/ev-1" and not request.HasField("incident")
    assert not request.user_id and request.status_notice.kind == "update"
    assert not request.status_notice.subscription_id
    dumped = str(request)
    for internal in INTERNAL[:-1]:
        assert internal not in dumped, internal
    assert parse(request.SerializeToString()) == request
    # A service on no component: nobody to tell.
    none = lifecycle.on_event(CONFIG, status_event(service="lone-svc"), EscalationState(), NOW, {})
    assert none.notices == []


def test_a_status_notice_without_what_it_needs_is_a_bad_record() -> None:
    bare = notification_pb2.NotificationRequest(
        idempotency_key="k", status_notice=notification_pb2.StatusNotice(kind="update")
    )
    with pytest.raises(BadRecord, match=r"status_notice\.update_id, status_notice\.status"):
        parse(bare.SerializeToString())
    odd = notification_pb2.NotificationRequest(
        idempotency_key="k", status_notice=notification_pb2.StatusNotice(kind="poem")
    )
    with pytest.raises(BadRecord, match="kind"):
        parse(odd.SerializeToString())
    unnamed = notification_pb2.NotificationRequest(
        idempotency_key="k", status_notice=notification_pb2.StatusNotice(kind="confirmation")
    )
    with pytest.raises(BadRecord, match="subscription_id"):
        parse(unnamed.SerializeToString())


# --- notification: fan-out and delivery -------------------------------------------------


class MemoryStore:
    def __init__(self, *subs: Subscription) -> None:
        self.kept = {s.subscription_id: s for s in subs}

    async def get(self, subscription_id: str) -> Subscription | None:
        return self.kept.get(subscription_id)

    async def all(self) -> list[Subscription]:
        return list(self.kept.values())

    async def count(self) -> int:
        return len(self.kept)

    async def put(self, sub: Subscription) -> None:
        self.kept[sub.subscription_id] = sub

    async def delete(self, subscription_id: str) -> bool:
        return self.kept.pop(subscription_id, None) is not None

    async def replace(self, sub: Subscription) -> bool:
        if sub.subscription_id not in self.kept or self.vanish:
            return False
        self.kept[sub.subscription_id] = sub
        return True

    vanish = False  # deleted between a link's check and its change


class Done:
    def __await__(self) -> Any:
        return iter(())


@dataclass
class FakeProducer:
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    async def enqueue(self, topic: Any, key: str, message: Any) -> Any:
        self.sent.append((topic.name, key, message))
        return Done()


@dataclass
class FakeIdempotency:
    delivered: set[str] = field(default_factory=set)

    async def admit(self, job: Job) -> Claim:
        key = job.request.idempotency_key
        return Claim.DELIVERED if key in self.delivered else Claim.ACQUIRED

    async def renew(self, jobs: list[Job]) -> list[Job]:
        return []

    async def release(self, jobs: list[Job]) -> None:
        pass

    def forget(self, job: Job) -> None:
        pass


@dataclass
class FakeRecord:
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)
    letters: list[str] = field(default_factory=list)

    async def record(self, job: Job, channel: str, outcome: int, detail: str, *_: Any) -> Any:
        name = notification_pb2.DeliveryOutcome.Name(outcome)  # type: ignore[arg-type]
        self.outcomes.append((channel, name.removeprefix("DELIVERY_OUTCOME_"), detail))
        return notification_pb2.NotificationStatus(detail=detail)

    async def dead_letter(self, job: Job, reason: str, history: Any) -> None:
        self.letters.append(reason)


class FakeSend:
    async def send(self, provider: Any, page: Page) -> str:
        return str(await provider.send(page))

    async def call(self, address: str, attempt: Any) -> str:
        return str(await attempt())


@dataclass
class FakeStages:
    idempotency: FakeIdempotency = field(default_factory=FakeIdempotency)
    record: FakeRecord = field(default_factory=FakeRecord)
    send: FakeSend = field(default_factory=FakeSend)
    retry: RetryStage = field(
        default_factory=lambda: RetryStage(RetryPolicy(max_attempts=2), FakeClock(NOW))
    )
    marked: list[str] = field(default_factory=list)

    async def mark_delivered(self, jobs: list[Job]) -> None:
        self.marked += [j.request.idempotency_key for j in jobs]

    # The real claim-once loop over these fakes.
    once = Pipeline.once


@dataclass
class FakeMail:
    pages: list[Page] = field(default_factory=list)
    channel: str = "email"

    async def send(self, page: Page) -> str:
        self.pages.append(page)
        return "SMTP 250"

    async def close(self) -> None:
        pass


@dataclass
class FakeHttp:
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    status: int = 200

    async def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> str:
        self.posts.append((url, data, headers))
        if self.status >= 400:
            raise DeliveryError(f"HTTP {self.status}", retryable=False)
        return f"HTTP {self.status}"


def delivery(
    store: MemoryStore, secret: bytes | None = b"w" * 32
) -> tuple[SubscriberDelivery, FakeStages, FakeProducer, FakeMail, FakeHttp]:
    stages, producer, mail, http = FakeStages(), FakeProducer(), FakeMail(), FakeHttp()
    runner = SubscriberDelivery(
        stages,  # type: ignore[arg-type]
        FakeClock(NOW),
        producer,
        store,
        lambda: CONFIG,
        link_key=KEY,
        api_url=API,
        email=mail,
        secret=secret,
    )
    runner._http = http  # type: ignore[assignment]
    return runner, stages, producer, mail, http


def update_job(subscription_id: str = "") -> Job:
    request = notice_request(notice(component_ids=("cmp-pay",)), NOW)
    if subscription_id:
        request.idempotency_key = notices.fan_out_key("ev-1", subscription_id)
        request.status_notice.subscription_id = subscription_id
    return Job(request)


def confirmed(sub: Subscription) -> Subscription:
    token = link_token(KEY, "confirm", sub.subscription_id)
    return confirm(sub, token, sub.created_at, timedelta(hours=1))


async def test_an_update_fans_out_to_each_confirmed_subscriber_of_its_components() -> None:
    store = MemoryStore(
        confirmed(make("ana")),
        make("pat"),  # pending
        unsubscribe(confirmed(make("leo")), link_token(KEY, "unsubscribe", "leo"), NOW),
        make("hook", "webhook", "https://h.example.com/x"),
        make("web", "webhook", "https://h.example.com/y", components=["cmp-web"]),
        make("all", "webhook", "https://h.example.com/z", components=[]),
    )
    runner, stages, producer, _, _ = delivery(store)
    job = update_job()
    assert await runner.handle(job) is None
    assert [(topic, key) for topic, key, _ in producer.sent] == [
        ("notifications.requests", "ana"),
        ("notifications.requests", "hook"),
        ("notifications.requests", "all"),
    ]
    first = producer.sent[0][2]
    assert (
        first.idempotency_key == "status/ev-1/ana" and first.status_notice.subscription_id == "ana"
    )
    assert first.status_notice.title == "Card payments fail"
    assert len(job.produced) == 3 and stages.record.outcomes == []  # committed once all are durable


async def test_an_email_subscriber_gets_the_update_with_its_unsubscribe_link() -> None:
    runner, stages, _, mail, _ = delivery(MemoryStore(confirmed(make("ana"))))
    await runner.handle(update_job("ana"))
    (page,) = mail.pages
    unsubscribe_link = notices.links_for(API, KEY, "ana").unsubscribe
    assert page.address == "ana@example.com" and page.subject.startswith("[Acme status] Identified")
    assert dict(page.headers) == {
        "List-Unsubscribe": f"<{unsubscribe_link}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert unsubscribe_link in page.text and page.incident_id == ""
    message = EmailProvider(sender="status@example.com").message(page)
    assert message["List-Unsubscribe"] == f"<{unsubscribe_link}>"
    assert message["X-Tocsin-Incident"] is None
    assert stages.record.outcomes == [("status-email", "DELIVERED", "SMTP 250")]
    assert stages.marked == ["status/ev-1/ana"]
    # Delivered once: a redelivered request is a duplicate and sends nothing.
    stages.idempotency.delivered.add("status/ev-1/ana")
    await runner.handle(update_job("ana"))
    assert len(mail.pages) == 1 and stages.record.outcomes[-1][1] == "DUPLICATE"


async def test_a_webhook_subscriber_gets_a_signed_public_body() -> None:
    runner, stages, _, _, http = delivery(MemoryStore(make("hook", "webhook", "http://10.0.0.5/x")))
    await runner.handle(update_job("hook"))
    ((url, body, headers),) = http.posts
    assert url == "http://10.0.0.5/x" and headers["Idempotency-Key"] == "status/ev-1/hook"
    assert verify(b"w" * 32, body, headers["X-Tocsin-Signature"], datetime.now(UTC).timestamp())
    sent = json.loads(body)
    assert sent["update"]["components"] == ["Payments"] and sent["subscription"]["id"] == "hook"
    for internal in INTERNAL:
        assert internal not in body.decode(), internal
    assert stages.record.outcomes == [("status-webhook", "DELIVERED", "HTTP 200")]


async def test_a_refused_webhook_is_dead_lettered_and_no_secret_means_not_sent() -> None:
    runner, stages, _, _, http = delivery(
        MemoryStore(make("hook", "webhook", "https://h.example.com/x"))
    )
    http.status = 410
    await runner.handle(update_job("hook"))
    assert stages.record.outcomes[-1][1] == "FAILED" and stages.record.letters == [
        "not retryable: HTTP 410"
    ]
    unsigned, stages, _, _, http = delivery(
        MemoryStore(make("hook", "webhook", "https://h.example.com/x")), secret=None
    )
    await unsigned.handle(update_job("hook"))
    assert http.posts == [] and "signing secret" in stages.record.outcomes[-1][2]


async def test_ended_or_deleted_subscriptions_are_skipped_and_confirmations_go_to_pending() -> None:
    leo = unsubscribe(confirmed(make("leo")), link_token(KEY, "unsubscribe", "leo"), NOW)
    runner, stages, _, mail, _ = delivery(MemoryStore(leo, make("pat")))
    await runner.handle(update_job("leo"))
    await runner.handle(update_job("gone"))
    await runner.handle(update_job("pat"))  # pending: no update yet
    assert [o[1:] for o in stages.record.outcomes] == [
        ("SKIPPED", "not sent: the subscription is unsubscribed"),
        ("SKIPPED", "not sent: the subscription is deleted"),
        ("SKIPPED", "not sent: the subscription is pending"),
    ]
    asking = Job(
        notification_pb2.NotificationRequest(
            idempotency_key="status-confirm/pat",
            status_notice=notification_pb2.StatusNotice(kind="confirmation", subscription_id="pat"),
        )
    )
    await runner.handle(asking)
    (page,) = mail.pages
    assert page.subject == "[Acme status] Confirm your subscription"
    assert notices.links_for(API, KEY, "pat").confirm in page.text and "within 2 hours" in page.text


# --- the api: REST and the capability links -------------------------------------------


@dataclass
class FakeConfig:
    current: TocsinConfig = CONFIG


PEOPLE = {
    "Bearer max": Principal("max", PrincipalKind.USER, team_roles={"pay": Role.MANAGER}),
    "Bearer rita": Principal("rita", PrincipalKind.USER, team_roles={"pay": Role.RESPONDER}),
    "Bearer wes": Principal("wes", PrincipalKind.USER, team_roles={"web": Role.MANAGER}),
    "Bearer root": Principal("root", PrincipalKind.USER, admin=True),
}


class FakeAuthenticator:
    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        return PEOPLE.get(authorization or "") or AuthFailure("unknown, revoked or expired token")


@dataclass
class FakeAudit:
    records: list[tuple[str, str, bool]] = field(default_factory=list)

    async def record(
        self, *, principal: Any, action: str, resource: Any, decision: Any, **_: Any
    ) -> None:
        self.records.append((principal.id if principal else "", action, decision.allowed))


@dataclass
class Api:
    http: TestClient
    store: MemoryStore
    sent: list[tuple[str, Any]]
    audit: FakeAudit
    clock: list[float]


def api(fail_kafka: bool = False) -> Api:
    store, sent, audit, clock = MemoryStore(), [], FakeAudit(), [NOW.timestamp()]

    async def send_notice(key: str, request: Any) -> None:
        if fail_kafka:
            raise OSError("kafka down")
        sent.append((key, request))

    state = ApiState(
        config=FakeConfig(),
        authenticator=FakeAuthenticator(),
        backends=None,  # type: ignore[arg-type]
        settings=ApiSettings.from_env({"TOCSIN_API_PUBLIC_URL": API}),
        feeds=lambda: None,  # type: ignore[arg-type,return-value]
        audit=audit,  # type: ignore[arg-type]
        clock=lambda: clock[0],
        status_subscriptions=lambda: store,
        subscription_key=KEY,
        send_notice=send_notice,
    )
    return Api(
        TestClient(create_app(state), raise_server_exceptions=False), store, sent, audit, clock
    )


ROUTE = "/api/v1/status_page/subscriptions"


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {who}"}


def test_a_manager_subscribes_an_address_and_the_confirmation_is_requested() -> None:
    a = api()
    made = a.http.post(
        ROUTE,
        json={"kind": "email", "address": "ana@example.com", "components": ["cmp-pay"]},
        headers=as_("max"),
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (
        body["state"] == "pending"
        and body["created_by"] == "max"
        and body["components"] == ["cmp-pay"]
    )
    sid = body["subscription_id"]
    ((key, request),) = a.sent
    assert key == sid and request.idempotency_key == f"status-confirm/{sid}"
    assert request.status_notice.kind == "confirmation"
    assert link_token(KEY, "confirm", sid) not in json.dumps(body)
    assert ("max", "status_page.subscribers", True) in a.audit.records
    hook = a.http.post(
        ROUTE,
        json={
            "kind": "webhook",
            "address": "http://127.0.0.1:9/x",
            "components": ["cmp-pay", "cmp-web"],
        },
        headers=as_("max"),
    )
    assert hook.status_code == 201 and hook.json()["state"] == "confirmed" and len(a.sent) == 1
    listed = a.http.get(ROUTE, headers=as_("max")).json()["subscriptions"]
    assert {s["subscription_id"] for s in listed} == {sid, hook.json()["subscription_id"]}
    assert a.http.get(ROUTE, headers=as_("wes")).json()["subscriptions"] == [
        s for s in listed if s["subscription_id"] == hook.json()["subscription_id"]
    ]  # Wes manages cmp-web's team: the webhook on both components only
    assert a.http.delete(f"{ROUTE}/{sid}", headers=as_("wes")).status_code == 403
    assert a.http.delete(f"{ROUTE}/{sid}", headers=as_("max")).status_code == 204
    assert a.http.delete(f"{ROUTE}/{sid}", headers=as_("max")).status_code == 404
    assert sid not in a.store.kept


@pytest.mark.parametrize(
    ("who", "body", "status", "field_name"),
    [
        ("", {"kind": "email", "address": "a@example.com"}, 401, None),
        (
            "rita",
            {"kind": "email", "address": "a@example.com", "components": ["cmp-pay"]},
            403,
            None,
        ),
        ("max", {"kind": "email", "address": "a@example.com"}, 403, None),  # every component: admin
        ("max", {"kind": "email", "address": "nope", "components": ["cmp-pay"]}, 400, "address"),
        (
            "max",
            {"kind": "webhook", "address": "ftp://x.example", "components": ["cmp-pay"]},
            400,
            "address",
        ),
        (
            "root",
            {"kind": "email", "address": "a@example.com", "components": ["gone"]},
            400,
            "components",
        ),
        (
            "max",
            {"kind": "sms", "address": "a@example.com", "components": ["cmp-pay"]},
            400,
            "kind",
        ),
        (
            "max",
            {"kind": "email", "address": "a" * 2001, "components": ["cmp-pay"]},
            400,
            "address",
        ),
    ],
)
def test_subscribing_is_checked(
    who: str, body: dict[str, Any], status: int, field_name: str | None
) -> None:
    a = api()
    reply = a.http.post(ROUTE, json=body, headers=as_(who) if who else {})
    assert reply.status_code == status, reply.text
    if field_name:
        assert reply.json()["errors"][0]["field"] == field_name
    assert a.store.kept == {} and a.sent == []


def test_a_pending_subscription_past_its_link_is_dropped_when_another_is_made() -> None:
    a = api()
    a.store.kept["old"] = make("old", now=NOW - timedelta(hours=2))  # confirmation_ttl: 2h
    a.store.kept["new"] = make("new", now=NOW - timedelta(hours=1))
    a.store.kept["kept"] = confirmed(make("kept", now=NOW - timedelta(days=9)))
    assert lapsed(a.store.kept.values(), NOW, timedelta(hours=2)) == ["old"]
    made = a.http.post(
        ROUTE,
        json={"kind": "webhook", "address": "https://h.example.com", "components": ["cmp-pay"]},
        headers=as_("max"),
    )
    assert made.status_code == 201
    assert set(a.store.kept) == {"new", "kept", made.json()["subscription_id"]}


def test_routes_need_a_bearer_and_kafka_down_leaves_no_subscription() -> None:
    a = api()
    assert a.http.get(ROUTE).status_code == 401
    assert a.http.delete(f"{ROUTE}/x").status_code == 401
    assert a.http.get(ROUTE, headers=as_("rita")).json() == {"subscriptions": []}
    down = api(fail_kafka=True)
    reply = down.http.post(
        ROUTE,
        json={"kind": "email", "address": "a@example.com", "components": ["cmp-pay"]},
        headers=as_("max"),
    )
    assert reply.status_code == 503 and down.store.kept == {}


def link(sid: str, purpose: str, token: str | None = None) -> str:
    return f"/status/subscriptions/{sid}/{purpose}/{token or link_token(KEY, purpose, sid)}"  # type: ignore[arg-type]


def test_the_confirm_link_shows_a_button_then_the_post_confirms_once() -> None:
    a = api()
    a.store.kept["s1"] = make("s1")
    shown = a.http.get(link("s1", "confirm"))
    assert shown.status_code == 200 and '<form method="post">' in shown.text
    assert "form-action 'self'" in shown.headers["content-security-policy"]
    assert (
        shown.headers["referrer-policy"] == "no-referrer"
        and shown.headers["cache-control"] == "no-store"
    )
    assert a.store.kept["s1"].state == "pending"  # a GET changes nothing
    done = a.http.post(link("s1", "confirm"))
    assert done.status_code == 200 and "confirmed" in done.text
    assert a.store.kept["s1"].state == "confirmed"
    assert a.http.post(link("s1", "confirm")).status_code == 409  # moot
    assert a.http.get(link("s1", "confirm")).status_code == 409
    assert a.audit.records == [
        ("subscription:s1", "status_page.subscribers.confirm", True),
        ("subscription:s1", "status_page.subscribers.confirm", False),
    ]


def test_links_refuse_a_wrong_token_an_expired_confirmation_and_an_ended_subscription() -> None:
    a = api()
    a.store.kept["s1"] = make("s1")
    a.store.kept["s2"] = make("s2")
    wrong = a.http.post(link("s1", "confirm", link_token(KEY, "confirm", "s2")))
    assert wrong.status_code == 404 and a.store.kept["s1"].state == "pending"
    assert a.audit.records == [("", "status_page.subscribers.confirm", False)]  # anonymous
    assert (
        a.http.post(link("s1", "unsubscribe", link_token(KEY, "confirm", "s1"))).status_code == 404
    )
    assert a.http.post(link("nope", "confirm")).status_code == 404
    assert a.http.post(link("s1", "delete")).status_code == 404
    a.clock[0] += timedelta(hours=2).total_seconds()  # confirmation_ttl: 2h
    expired = a.http.post(link("s1", "confirm"))
    assert expired.status_code == 410 and "expired" in expired.text
    # Unsubscribing works in any state, once.
    left = a.http.post(link("s1", "unsubscribe"), data={"List-Unsubscribe": "One-Click"})
    assert left.status_code == 200 and a.store.kept["s1"].state == "unsubscribed"
    assert a.http.post(link("s1", "unsubscribe")).status_code == 409
    assert a.http.post(link("s1", "confirm")).status_code == 409  # ended
    assert ("subscription:s1", "status_page.subscribers.unsubscribe", True) in a.audit.records
    assert a.store.kept["s2"] == replace(make("s2"))
    a.store.vanish = True  # deleted while the link was being checked: not brought back
    assert a.http.post(link("s2", "unsubscribe")).status_code == 404
    assert a.audit.records[-1] == ("subscription:s2", "status_page.subscribers.unsubscribe", False)
