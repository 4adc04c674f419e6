"""The start-up check of Redis's persistence settings (tocsin_common.redis_durability)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from tocsin_common.redis_durability import (
    ENV,
    DurabilityMode,
    RedisDurabilityError,
    check_mode,
    check_redis_durability,
    durability_problem,
    require_durable_redis,
)

DURABLE = {b"appendonly": b"yes", b"appendfsync": b"always", b"appenddirname": b"aof"}


class FakeRedis:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def config_get(self, pattern: str) -> Any:
        self.asked.append(pattern)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_durable_settings_are_no_problem() -> None:
    assert durability_problem(DURABLE) is None
    assert durability_problem({"appendonly": "YES", "appendfsync": "Always"}) is None


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({b"appendonly": b"yes", b"appendfsync": b"everysec"}, "appendfsync is 'everysec'"),
        ({b"appendonly": b"no", b"appendfsync": b"always"}, "appendonly is 'no'"),
        ({b"appendonly": b"yes", b"appendfsync": b"no"}, "appendfsync is 'no'"),
        ({}, "appendonly is '(not reported)'"),
    ],
)
def test_each_missing_setting_is_named(config: dict[bytes, bytes], named: str) -> None:
    problem = durability_problem(config)
    assert problem is not None and named in problem
    assert "appendfsync always" in problem


def test_mode_defaults_to_enforce_and_rejects_typos() -> None:
    assert check_mode({}) is DurabilityMode.ENFORCE
    assert check_mode({ENV: " WARN "}) is DurabilityMode.WARN
    assert check_mode({ENV: "enforce"}) is DurabilityMode.ENFORCE
    with pytest.raises(ValueError, match=f"{ENV}: 'off' is not one of enforce, warn"):
        check_mode({ENV: "off"})


def test_durable_redis_passes() -> None:
    redis = FakeRedis(DURABLE)
    assert asyncio.run(check_redis_durability(redis, "svc", "X", {})) is None
    assert redis.asked == ["append*"]


def test_everysec_refuses_to_start_naming_the_settings_and_the_escape_hatch() -> None:
    redis = FakeRedis({b"appendonly": b"yes", b"appendfsync": b"everysec"})
    with pytest.raises(RedisDurabilityError) as refused:
        asyncio.run(check_redis_durability(redis, "notification", "Never paging twice", {}))
    message = str(refused.value)
    assert message.startswith("notification: ")
    assert "appendfsync is 'everysec'" in message
    assert "Never paging twice rely on it" in message
    assert f"{ENV}=warn" in message


def test_warn_mode_starts_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    redis = FakeRedis({b"appendonly": b"no", b"appendfsync": b"everysec"})
    with caplog.at_level(logging.WARNING, logger="tocsin.redis"):
        problem = asyncio.run(check_redis_durability(redis, "escalation", "T", {ENV: "warn"}))
    assert problem is not None and "appendonly is 'no'" in problem
    assert any("REDIS NOT DURABLE" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "error",
    [ResponseError("unknown command 'CONFIG'"), NoPermissionError("no permissions to run")],
)
def test_config_forbidden_refuses_unless_warn(error: Exception) -> None:
    with pytest.raises(RedisDurabilityError, match="cannot read Redis's persistence settings"):
        asyncio.run(check_redis_durability(FakeRedis(error), "escalation", "T", {}))
    problem = asyncio.run(
        check_redis_durability(FakeRedis(error), "escalation", "T", {ENV: "warn"})
    )
    assert problem is not None and "CONFIG GET" in problem


def test_require_waits_for_redis_then_exits_with_the_message() -> None:
    redis = FakeRedis(RedisConnectionError("refused"), {b"appendonly": b"no"})
    with pytest.raises(SystemExit, match="appendonly is 'no'"):
        asyncio.run(require_durable_redis(redis, "svc", "T", {}, retry_s=0))
    assert redis.asked == ["append*", "append*"]
    asyncio.run(require_durable_redis(FakeRedis(DURABLE), "svc", "T", {}, retry_s=0))
