"""Subscriptions: e-mail double opt-in, webhooks, per component, tokens checked safely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tocsin_common.statuspage import subscriptions as subs
from tocsin_common.statuspage.subscriptions import (
    SubscriptionError,
    confirm,
    recipients,
    subscribe,
    unsubscribe,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
CONFIRM = "c" * 22 + "-confirm"
LEAVE = "u" * 22 + "-leave"


def make(**fields: Any) -> subs.Subscription:
    values: dict[str, Any] = {
        "subscription_id": "s1",
        "kind": "email",
        "address": "ana@example.com",
        "components": ["shop"],
        "known_components": ["shop", "pay"],
        "confirm_token": CONFIRM,
        "unsubscribe_token": LEAVE,
        "now": NOW,
        **fields,
    }
    return subscribe(**values)


def test_email_double_opt_in_then_unsubscribe() -> None:
    sub = make()
    assert sub.state == "pending" and not sub.wants(["shop"])
    assert CONFIRM not in repr(sub) and LEAVE not in repr(sub)  # only digests are kept
    confirmed = confirm(sub, CONFIRM, NOW + timedelta(hours=1), TTL)
    assert confirmed.state == "confirmed" and confirmed.confirmed_at == NOW + timedelta(hours=1)
    assert confirm(confirmed, "anything", NOW, TTL) == confirmed  # a second click: no change
    assert confirmed.wants(["shop"]) and not confirmed.wants(["pay"])
    gone = unsubscribe(confirmed, LEAVE, NOW + timedelta(days=3))
    assert gone.state == "unsubscribed" and not gone.wants(["shop"])
    assert unsubscribe(gone, LEAVE, NOW + timedelta(days=4)) == gone
    with pytest.raises(SubscriptionError, match="token: the subscription has ended"):
        confirm(gone, CONFIRM, NOW, TTL)


def test_webhooks_are_confirmed_when_made_and_all_components_by_default() -> None:
    hook = make(kind="webhook", address="https://hooks.example.com/status", components=[])
    assert hook.state == "confirmed" and hook.wants(["pay"]) and hook.confirm_token_hash == ""


@pytest.mark.parametrize(
    ("token", "minutes", "fragment"),
    [
        ("x" * 30, 10, "token: does not match"),
        (CONFIRM[:-1], 10, "token: does not match"),
        (CONFIRM, 24 * 60, "the confirmation link has expired"),
    ],
)
def test_confirm_refuses(token: str, minutes: int, fragment: str) -> None:
    with pytest.raises(SubscriptionError, match=fragment):
        confirm(make(), token, NOW + timedelta(minutes=minutes), TTL)


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = subs.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(subs.hmac, "compare_digest", spy)
    sub = make()
    confirm(sub, CONFIRM, NOW, TTL)
    with pytest.raises(SubscriptionError):
        unsubscribe(sub, "w" * 30, NOW)
    assert len(calls) == 2 and calls[0][1] == sub.confirm_token_hash


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"address": "not-an-address"}, "address: 'not-an-address' is not an e-mail"),
        ({"kind": "webhook", "address": "ftp://files.example.com"}, "needs an http:// or https"),
        ({"kind": "webhook", "address": "https:///no-host"}, "needs an http:// or https"),
        ({"kind": "sms"}, "kind: 'sms' is not email or webhook"),
        ({"components": ["shop", "nope"]}, "components: unknown 'nope'"),
        ({"confirm_token": "short"}, "confirm_token: too short"),
        ({"unsubscribe_token": CONFIRM}, "unsubscribe_token: must differ"),
    ],
)
def test_subscribe_errors_name_the_field(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SubscriptionError, match=fragment):
        make(**fields)


def test_recipients_per_component() -> None:
    shop = confirm(make(subscription_id="a"), CONFIRM, NOW, TTL)
    pay = confirm(make(subscription_id="b", components=["pay"]), CONFIRM, NOW, TTL)
    every = make(
        subscription_id="c", kind="webhook", address="https://h.example.com", components=[]
    )
    pending = make(subscription_id="d")
    assert [s.subscription_id for s in recipients([shop, pay, every, pending], ["shop"])] == [
        "a",
        "c",
    ]
    assert [s.subscription_id for s in recipients([shop, pay, every, pending], ["pay"])] == [
        "b",
        "c",
    ]
