"""The api's verified-token cache: a revoked token stops working within the TTL (at once on
the replica that revoked it), never past its expiry nor a config reload; off by default.
And the access control's Redis pool, which waits for a connection under a burst."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool
from tocsin_common.auth.access import (
    REDIS_CONNECTIONS,
    REDIS_WAIT_S,
    AccessControl,
    Authenticator,
    AuthFailure,
)
from tocsin_common.auth.policy import PrincipalKind, Role
from tocsin_common.auth.tokens import TokenRecord, new_token
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.transport import RedisConnection

CONFIG = """
version: 1
services:
  - {id: web, name: Web, team: sre, escalation_policy: p}
teams:
  - {id: sre, name: SRE, members: [rita]}
users:
  - {id: rita, name: Rita, email: rita@example.com}
escalation_policies:
  - id: p
    name: P
    levels: [{delay: 5m, targets: [{type: user, id: rita}]}]
"""
START = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)


class Store:
    def __init__(self, config: TocsinConfig) -> None:
        self.current = config


class Tokens:
    """A TokenStore's verify over a dict, counting the look-ups (each one a Redis call)."""

    def __init__(self) -> None:
        self.records: dict[str, TokenRecord] = {}
        self.lookups = 0

    async def verify(self, token: str, now: datetime) -> TokenRecord | None:
        self.lookups += 1
        record = self.records.get(token)
        return record if record is not None and record.expires_at > now else None


def record(token_id: str = "tok_1", expires_in: timedelta = timedelta(days=1)) -> TokenRecord:
    return TokenRecord(
        token_id=token_id,
        subject_id="rita",
        subject_kind=PrincipalKind.USER,
        name="laptop",
        scope=Role.ADMIN,
        created_at=START,
        expires_at=START + expires_in,
        created_by="rita",
    )


def setup(cache_seconds: float) -> tuple[Authenticator, Tokens, FakeClock, Store]:
    tokens = Tokens()
    clock = FakeClock(START)
    store = Store(parse_config(CONFIG, "tocsin.yaml"))
    auth = Authenticator(
        lambda: tokens,  # type: ignore[arg-type,return-value]
        store,  # type: ignore[arg-type]
        b"s" * 32,
        clock,
        cache_seconds=cache_seconds,
    )
    return auth, tokens, clock, store


async def check(auth: Authenticator, token: str) -> Any:
    return await auth.authenticate(f"Bearer {token}")


async def test_a_revoked_token_stops_working_within_the_ttl() -> None:
    auth, tokens, clock, _ = setup(5)
    token = new_token()
    tokens.records[token] = record()
    first = await check(auth, token)
    assert not isinstance(first, AuthFailure) and first.id == "rita"
    del tokens.records[token]  # revoked on another replica
    clock.advance(4.9)
    assert (await check(auth, token)).id == "rita"  # still cached, within 5 s
    assert tokens.lookups == 1
    clock.advance(0.1)
    refused = await check(auth, token)
    assert isinstance(refused, AuthFailure) and "revoked" in refused.reason
    assert tokens.lookups == 2


async def test_forget_drops_a_revoked_token_at_once() -> None:
    auth, tokens, _, _ = setup(5)
    token, other = new_token(), new_token()
    tokens.records[token] = record("tok_1")
    tokens.records[other] = record("tok_2")
    await check(auth, token)
    await check(auth, other)
    del tokens.records[token]
    auth.forget("tok_1")
    assert isinstance(await check(auth, token), AuthFailure)
    assert not isinstance(await check(auth, other), AuthFailure)
    assert tokens.lookups == 3  # the other token is still cached


async def test_a_cached_token_never_outlives_its_expiry() -> None:
    auth, tokens, clock, _ = setup(5)
    token = new_token()
    tokens.records[token] = record(expires_in=timedelta(seconds=2))
    await check(auth, token)
    clock.advance(2)
    assert isinstance(await check(auth, token), AuthFailure)


async def test_a_config_reload_is_seen_at_once() -> None:
    auth, tokens, _, store = setup(5)
    token = new_token()
    tokens.records[token] = record()
    await check(auth, token)
    store.current = parse_config(CONFIG.replace("rita", "ruth"), "tocsin.yaml")  # rita left
    refused = await check(auth, token)
    assert isinstance(refused, AuthFailure) and "no longer in the configuration" in refused.reason


async def test_no_cache_by_default_every_call_reads_the_store() -> None:
    auth, tokens, _, _ = setup(0)
    token = new_token()
    tokens.records[token] = record()
    await check(auth, token)
    await check(auth, token)
    assert tokens.lookups == 2
    tokens.records.clear()
    assert isinstance(await check(auth, token), AuthFailure)


async def test_failures_are_not_cached() -> None:
    auth, tokens, _, _ = setup(5)
    token = new_token()
    assert isinstance(await check(auth, token), AuthFailure)
    tokens.records[token] = replace(record(), token_id="tok_late")
    assert (await check(auth, token)).token_id == "tok_late"


def test_the_ttl_is_bounded() -> None:
    with pytest.raises(ValueError, match="cache_seconds: 6, expected 0 to 5"):
        setup(6)


async def test_the_access_controls_redis_pool_waits_for_a_connection_when_busy() -> None:
    """redis-py's default pool raises "Too many connections" past 100: under a burst every
    call beyond would fail authentication; the blocking pool makes it wait instead."""
    access = AccessControl(
        service="api",
        config=Store(parse_config(CONFIG, "tocsin.yaml")),  # type: ignore[arg-type]
        redis=RedisConnection("redis://127.0.0.1:1/0"),
        kafka_bootstrap="127.0.0.1:1",
        service_secret=b"s" * 32,
    )
    pool = access.redis().connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == REDIS_CONNECTIONS and pool.timeout == REDIS_WAIT_S
    await access.redis().aclose()
