"""Subscribers of the status page (pure): e-mail with double opt-in, webhooks; per component.

An e-mail subscription starts ``pending`` and is ``confirmed`` by the token sent to the
address (within ``status_page.confirmation_ttl``); a webhook subscription is confirmed when
made (whoever sets it up owns the endpoint; its deliveries are signed). Either ends
``unsubscribed`` by its unsubscribe token. Tokens are stored as SHA-256 digests and compared
in constant time. The services make them with :func:`link_token`, an HMAC of the
subscription id under a key derived from the deployment's service secret
(:func:`link_key`): so every e-mail can carry the unsubscribe link without the token being
stored anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "Subscription",
    "SubscriptionError",
    "SubscriptionState",
    "confirm",
    "decode",
    "encode",
    "hash_token",
    "lapsed",
    "link_key",
    "link_token",
    "recipients",
    "subscribe",
    "unsubscribe",
]

SubscriptionState = Literal["pending", "confirmed", "unsubscribed"]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MAX_COMPONENTS = 500
MIN_TOKEN_CHARS = 22  # 128 bits of token_urlsafe
MAX_SUBSCRIPTIONS = 10_000  # in all, across components
LinkPurpose = Literal["confirm", "unsubscribe"]


class SubscriptionError(ValueError):
    """A refused request; the message names the field (``token`` for a wrong or used one)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_key(service_secret: str) -> bytes:
    """The key of the subscription links, derived from the service secret every service
    shares (never the secret itself). Rotating that secret voids the links already sent."""
    if not service_secret:
        raise SubscriptionError("service secret: empty; subscription links need it")
    label = b"tocsin status-page subscription links v1"
    return hmac.new(service_secret.encode(), label, hashlib.sha256).digest()


def link_token(key: bytes, purpose: LinkPurpose, subscription_id: str) -> str:
    """The token of a subscription's confirm or unsubscribe link (43 characters)."""
    mac = hmac.new(key, f"{purpose}\x1f{subscription_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _token_matches(token: str, digest: str) -> bool:
    return bool(digest) and hmac.compare_digest(hash_token(token), digest)


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    kind: Literal["email", "webhook"]
    address: str
    components: frozenset[str]  # component ids; empty: every component
    state: SubscriptionState
    created_at: datetime
    confirm_token_hash: str
    unsubscribe_token_hash: str
    confirmed_at: datetime | None = None
    ended_at: datetime | None = None
    created_by: str = ""  # the principal who made it

    def wants(self, component_ids: Iterable[str]) -> bool:
        """Whether an update about these components goes to this subscriber."""
        if self.state != "confirmed":
            return False
        return not self.components or bool(self.components & set(component_ids))


def subscribe(
    *,
    subscription_id: str,
    kind: str,
    address: str,
    components: Iterable[str],
    known_components: Iterable[str],
    confirm_token: str,
    unsubscribe_token: str,
    now: datetime,
    created_by: str = "",
) -> Subscription:
    """A new subscription (pending for e-mail, confirmed for a webhook)."""
    chosen = frozenset(components)
    if kind == "email":
        if len(address) > 320 or not _EMAIL.match(address):
            raise SubscriptionError(f"address: {address[:100]!r} is not an e-mail address")
    elif kind == "webhook":
        # As the webhook channel: http or https; where it may go (a private or loopback
        # address needs notification.outgoing.allow) is decided when it is sent to.
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(address) > 2000:
            raise SubscriptionError(
                "address: a webhook subscription needs an http:// or https:// URL "
                "(at most 2,000 characters)"
            )
    else:
        raise SubscriptionError(f"kind: {kind!r} is not email or webhook")
    if len(chosen) > MAX_COMPONENTS:
        raise SubscriptionError(f"components: {len(chosen)} given, at most {MAX_COMPONENTS}")
    unknown = sorted(chosen - set(known_components))
    if unknown:
        raise SubscriptionError(f"components: unknown {', '.join(map(repr, unknown[:10]))}")
    for name, token in (("confirm_token", confirm_token), ("unsubscribe_token", unsubscribe_token)):
        if len(token) < MIN_TOKEN_CHARS:
            raise SubscriptionError(f"{name}: too short to be secret")
    if confirm_token == unsubscribe_token:
        raise SubscriptionError("unsubscribe_token: must differ from confirm_token")
    email = kind == "email"
    return Subscription(
        subscription_id=subscription_id,
        kind="email" if email else "webhook",
        address=address,
        components=chosen,
        state="pending" if email else "confirmed",
        created_at=now,
        confirm_token_hash=hash_token(confirm_token) if email else "",
        unsubscribe_token_hash=hash_token(unsubscribe_token),
        confirmed_at=None if email else now,
        created_by=created_by,
    )


def confirm(sub: Subscription, token: str, now: datetime, ttl: timedelta) -> Subscription:
    """Confirm a pending e-mail subscription with its token (the double opt-in)."""
    if sub.state == "confirmed":
        return sub  # a second click on the link changes nothing
    if sub.state != "pending":
        raise SubscriptionError("token: the subscription has ended")
    if now >= sub.created_at + ttl:
        raise SubscriptionError("token: the confirmation link has expired; subscribe again")
    if not _token_matches(token, sub.confirm_token_hash):
        raise SubscriptionError("token: does not match")
    return replace(sub, state="confirmed", confirmed_at=now, confirm_token_hash="")


def unsubscribe(sub: Subscription, token: str, now: datetime) -> Subscription:
    """End a subscription with its unsubscribe token (idempotent once ended)."""
    if not _token_matches(token, sub.unsubscribe_token_hash):
        raise SubscriptionError("token: does not match")
    if sub.state == "unsubscribed":
        return sub
    return replace(sub, state="unsubscribed", ended_at=now, confirm_token_hash="")


def lapsed(subscriptions: Iterable[Subscription], now: datetime, ttl: timedelta) -> list[str]:
    """The pending subscriptions whose confirmation link has expired: they can never be
    confirmed, so they are dropped (subscribing the address again sends a new link)."""
    return [
        s.subscription_id
        for s in subscriptions
        if s.state == "pending" and now >= s.created_at + ttl
    ]


def recipients(
    subscriptions: Iterable[Subscription], component_ids: Iterable[str]
) -> list[Subscription]:
    """The confirmed subscribers an update about ``component_ids`` goes to."""
    wanted = set(component_ids)
    return [s for s in subscriptions if s.wants(wanted)]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def encode(sub: Subscription) -> str:
    """The subscription as stored (JSON): its tokens only as digests."""
    data: dict[str, Any] = {
        "subscription_id": sub.subscription_id,
        "kind": sub.kind,
        "address": sub.address,
        "components": sorted(sub.components),
        "state": sub.state,
        "created_at": sub.created_at.isoformat(),
        "confirm_token_hash": sub.confirm_token_hash,
        "unsubscribe_token_hash": sub.unsubscribe_token_hash,
        "confirmed_at": _time(sub.confirmed_at),
        "ended_at": _time(sub.ended_at),
        "created_by": sub.created_by,
    }
    return json.dumps(data, separators=(",", ":"))


def decode(raw: str | bytes) -> Subscription:
    """A stored subscription; SubscriptionError when it is not one."""
    try:
        data = json.loads(raw)
        kind = data["kind"]
        state = data["state"]
        if kind not in ("email", "webhook") or state not in (
            "pending",
            "confirmed",
            "unsubscribed",
        ):
            raise ValueError(f"kind {kind!r} / state {state!r}")
        return Subscription(
            subscription_id=str(data["subscription_id"]),
            kind=kind,
            address=str(data["address"]),
            components=frozenset(str(c) for c in data["components"]),
            state=state,
            created_at=datetime.fromisoformat(data["created_at"]),
            confirm_token_hash=str(data["confirm_token_hash"]),
            unsubscribe_token_hash=str(data["unsubscribe_token_hash"]),
            confirmed_at=_parse(data.get("confirmed_at")),
            ended_at=_parse(data.get("ended_at")),
            created_by=str(data.get("created_by", "")),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise SubscriptionError(f"stored subscription: {e}") from None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
