"""Unit tests of the generic webhook provider's signing and payload, provider discovery, and
the idempotency keys of planned pages."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from tocsin_escalation.policy import PlannedPage
from tocsin_notification.providers import ENTRY_POINT_GROUP, Page, discover
from tocsin_notification.providers.webhook import (
    SIGNATURE_HEADER,
    WebhookProvider,
    payload,
    sign,
    verify,
)

SECRET = b"s3cret"
BODY = b'{"event":"incident.page","incident":{"id":"inc-1"}}'
T0 = 1_800_000_000


def page(**changes: object) -> Page:
    fields: dict[str, object] = {
        "incident_id": "inc-1",
        "service_id": "checkout",
        "title": "Disk full on db-1",
        "status": "triggered",
        "urgency": "high",
        "user_id": "alice",
        "user_name": "Alice",
        "address": "http://127.0.0.1:9999/pages/alice",
        "idempotency_key": "inc-1:1:0:alice:0",
    }
    fields.update(changes)
    return Page(**fields)  # type: ignore[arg-type]


# --- sign / verify -----------------------------------------------------------------------------


def test_sign_format_and_digest() -> None:
    header = sign(SECRET, BODY, T0)
    expected = hmac.new(SECRET, f"{T0}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T0},v1={expected}"
    assert SIGNATURE_HEADER == "X-Tocsin-Signature"


def test_verify_valid_signature() -> None:
    header = sign(SECRET, BODY, T0)
    assert verify(SECRET, BODY, header, now=T0)
    assert verify(SECRET, BODY, header, now=T0 + 300)  # at the edge of the tolerance
    assert verify(SECRET, BODY, header, now=T0 - 300)  # receiver's clock a little behind


def test_verify_rejects_tampered_body() -> None:
    header = sign(SECRET, BODY, T0)
    assert not verify(SECRET, BODY.replace(b"inc-1", b"inc-2"), header, now=T0)
    assert not verify(SECRET, BODY + b" ", header, now=T0)


def test_verify_rejects_wrong_secret() -> None:
    header = sign(SECRET, BODY, T0)
    assert not verify(b"other", BODY, header, now=T0)
    assert not verify(b"", BODY, header, now=T0)


def test_verify_rejects_stale_or_future_timestamp() -> None:
    header = sign(SECRET, BODY, T0)
    assert not verify(SECRET, BODY, header, now=T0 + 301)
    assert not verify(SECRET, BODY, header, now=T0 - 301)
    assert verify(SECRET, BODY, header, now=T0 + 3000, tolerance_s=3600)
    assert not verify(SECRET, BODY, header, now=T0 + 11, tolerance_s=10)


def test_verify_rejects_a_moved_timestamp() -> None:
    # Replaying an old signature with a fresh t= must fail: t is part of what is signed.
    digest = sign(SECRET, BODY, T0).split(",v1=")[1]
    assert not verify(SECRET, BODY, f"t={T0 + 1000},v1={digest}", now=T0 + 1000)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=abc,v1=00",
        f"t={T0}",
        "v1=00",
        f"t={T0};v1=00",
        f"t={T0}.5,v1=00",
        f"t={T0},v1=",
        f"t={T0},v1=zz",
    ],
)
def test_verify_rejects_malformed_header(header: str) -> None:
    assert verify(SECRET, BODY, header, now=T0) is False


def test_verify_rejects_non_ascii_header() -> None:
    assert verify(SECRET, BODY, f"t={T0},v1=\u00e9", now=T0) is False


# --- payload -----------------------------------------------------------------------------------


def test_payload() -> None:
    body = payload(page())
    assert body == {
        "event": "incident.page",
        "incident": {
            "id": "inc-1",
            "service": "checkout",
            "title": "Disk full on db-1",
            "status": "triggered",
            "urgency": "high",
        },
        "user": {"id": "alice", "name": "Alice"},
        "idempotency_key": "inc-1:1:0:alice:0",
    }
    assert "details" not in body  # left out when empty
    # The payload is plain JSON and round-trips.
    assert json.loads(json.dumps(body)) == body


def test_payload_with_details() -> None:
    body = payload(page(details={"ack_url": "https://t/ack", "alerts": 3}))
    assert body["details"] == {"ack_url": "https://t/ack", "alerts": 3}


# --- discovery ----------------------------------------------------------------------------------


def test_discover_finds_the_webhook_entry_point() -> None:
    assert ENTRY_POINT_GROUP == "tocsin.providers"
    providers = discover()
    assert providers["webhook"] is WebhookProvider
    assert WebhookProvider.channel == "webhook"
    for name, provider in providers.items():
        assert callable(getattr(provider, "send", None)), name


# --- idempotency keys --------------------------------------------------------------------------


def test_planned_page_idempotency_key_format() -> None:
    planned = PlannedPage(
        user_id="alice",
        contact_method_id="alice-hook",
        rule_index=1,
        delay=timedelta(minutes=5),
        level=2,
        loop=3,
    )
    key = planned.idempotency_key("8e3f2c5a-1111-4222-8333-444455556666")
    assert key == "8e3f2c5a-1111-4222-8333-444455556666:2:3:alice:1"
    # The contact method and delay are not part of it: a rule is identified by its index.
    moved = PlannedPage("alice", "alice-mail", 1, timedelta(0), 2, 3)
    assert moved.idempotency_key("x") == planned.idempotency_key("x")
    assert PlannedPage("alice", "alice-hook", 1, timedelta(0), 2, 4).idempotency_key("x") != (
        planned.idempotency_key("x")
    )
