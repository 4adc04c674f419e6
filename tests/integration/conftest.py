"""Session fixtures: one stack of the four services for all integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.integration.harness import Stack, infra_from_env

pytestmark = pytest.mark.integration

# Users page a recording webhook ({peer} is its base URL); rules page at once.
STACK_CONFIG = """
version: 1
services:
  - id: checkout
    name: Checkout API
    escalation_policy: checkout-primary
    integrations:
      - {key: itcheckout0000000000000000000001, type: any, name: tests}
    grouping: {mode: none}
  - id: payments
    name: Payments
    escalation_policy: payments-primary
    integrations:
      - {key: itpayments0000000000000000000001, type: any, name: tests}
    grouping: {mode: content, fields: [labels.alertname], window: 10m}
users:
  - id: alice
    name: Alice
    email: alice@example.com
    time_zone: Europe/Berlin
    contact_methods:
      - {id: alice-hook, type: webhook, address: "{peer}/pages/alice"}
    notification_rules:
      high: [{delay: 0m, contact_method: alice-hook}]
      low: [{delay: 0m, contact_method: alice-hook}]
  - id: bob
    name: Bob
    email: bob@example.com
    contact_methods:
      - {id: bob-hook, type: webhook, address: "{peer}/pages/bob"}
    notification_rules:
      high: [{delay: 0m, contact_method: bob-hook}]
schedules:
  - id: primary
    name: Primary
    time_zone: Europe/Berlin
    layers:
      - {name: weekly, start: "2026-01-05T09:00:00", rotation: weekly, users: [alice]}
escalation_policies:
  - id: checkout-primary
    name: Checkout primary
    levels:
      - delay: 5m
        targets: [{type: schedule, id: primary}]
  - id: payments-primary
    name: Payments primary
    levels:
      - delay: 5m
        targets: [{type: user, id: bob}]
"""


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()  # a clean projection and idempotency state per session
    await redis.aclose()
    workdir: Path = tmp_path_factory.mktemp("stack")
    stack = Stack(bootstrap, redis_url, workdir, STACK_CONFIG)
    try:
        await stack.start()
    except BaseException:
        print(stack.logs())
        await stack.stop()
        raise
    yield stack
    await stack.stop()
