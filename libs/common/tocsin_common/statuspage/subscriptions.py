"""Subscribers of the status page (pure): e-mail with double opt-in, webhooks; per component.

An e-mail subscription starts ``pending`` and is ``confirmed`` by the token sent to the
address (within ``status_page.confirmation_ttl``); a webhook subscription is confirmed when
made (whoever sets it up owns the endpoint; its deliveries are signed). Either ends
``unsubscribed`` by its unsubscribe token. Tokens are stored as SHA-256 digests and compared
in constant time; the caller makes them (``secrets.token_urlsafe``) and sends them once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "Subscription",
    "SubscriptionError",
    "SubscriptionState",
    "confirm",
    "hash_token",
    "recipients",
    "subscribe",
    "unsubscribe",
]

SubscriptionState = Literal["pending", "confirmed", "unsubscribed"]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MAX_COMPONENTS = 500
MIN_TOKEN_CHARS = 22  # 128 bits of token_urlsafe


class SubscriptionError(ValueError):
    """A refused request; the message names the field (``token`` for a wrong or used one)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
) -> Subscription:
    """A new subscription (pending for e-mail, confirmed for a webhook)."""
    chosen = frozenset(components)
    if kind == "email":
        if len(address) > 320 or not _EMAIL.match(address):
            raise SubscriptionError(f"address: {address[:100]!r} is not an e-mail address")
    elif kind == "webhook":
        parts = urlsplit(address)
        if parts.scheme != "https" or not parts.netloc or len(address) > 2000:
            raise SubscriptionError("address: a webhook subscription needs an https:// URL")
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


def recipients(
    subscriptions: Iterable[Subscription], component_ids: Iterable[str]
) -> list[Subscription]:
    """The confirmed subscribers an update about ``component_ids`` goes to."""
    wanted = set(component_ids)
    return [s for s in subscriptions if s.wants(wanted)]
