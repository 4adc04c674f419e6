"""Session fixtures: one stack of the four services for the integration tests and the
failure suite (which runs last, in the same session: it crashes the stack's Kafka and Redis).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from tests.integration.harness import Stack, infra_from_env

# The stack's config is every YAML fragment in stack_config/, merged: each top-level list
# (services, users, schedules, ...) is the concatenation of the fragments' lists, so each
# suite adds its own services and people without touching the others'; a section (access,
# notification, limits) is merged key by key, its lists concatenated too.
STACK_CONFIG_DIR = Path(__file__).parent / "integration" / "stack_config"


def _merge(into: dict[str, Any], data: dict[str, Any], depth: int) -> None:
    for key, value in data.items():
        if isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif isinstance(value, dict) and depth > 0:
            _merge(into.setdefault(key, {}), value, depth - 1)
        elif isinstance(value, dict):
            into.setdefault(key, {}).update(value)
        else:
            into[key] = value


def stack_config_text() -> str:
    merged: dict[str, Any] = {"version": 1}
    for fragment in sorted(STACK_CONFIG_DIR.glob("*.yaml")):
        data = yaml.safe_load(fragment.read_text()) or {}
        data.pop("version", None)
        # Sections merge one level down: one fragment's access.admins and another's
        # access.oidc both land in access; their lists concatenate.
        _merge(merged, data, depth=1)
    return yaml.safe_dump(merged, sort_keys=False)


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()  # a clean projection and idempotency state per session
    await redis.aclose()
    workdir: Path = tmp_path_factory.mktemp("stack")
    stack = Stack(bootstrap, redis_url, workdir, stack_config_text())
    try:
        await stack.start()
    except BaseException:
        print(stack.logs())
        await stack.stop()
        raise
    yield stack
    await stack.stop()


# The OpenID Connect provider's tokens live this long (its --token-max-age): test_oidc.py's
# expiry test waits for one to expire.
OIDC_TOKEN_LIFETIME = 12


@pytest.fixture(scope="session")
async def oidc_provider(stack: Stack) -> AsyncIterator[str]:
    """The OpenID Connect provider (oidc-provider-mock), listening where the stack's config
    says it is: one process per session, shared by test_oidc.py and the console's tests (a
    second process would sign with other keys than those the services have cached)."""
    log_path = stack.workdir / "oidc-provider.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "oidc_provider_mock",
            "--port",
            str(stack.oidc_port),
            "--token-max-age",
            str(OIDC_TOKEN_LIFETIME),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                assert proc.returncode is None, log_path.read_text()
                try:
                    url = f"{stack.oidc_issuer}/.well-known/openid-configuration"
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the OIDC provider did not start"
                await asyncio.sleep(0.2)
        yield stack.oidc_issuer
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
