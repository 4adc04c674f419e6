"""Queueing Lua scripts on a Redis pipeline, so many guarded writes share one round trip."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.typing import EncodableT


def queue_script(
    pipe: Pipeline, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
) -> None:
    """Queue ``script`` on ``pipe``; its result comes back from ``pipe.execute()``.

    redis-py's ``AsyncScript.__call__`` is a coroutine even when it only queues; this
    queues synchronously. The pipeline loads a script the server lacks before it executes.
    """
    pipe.scripts.add(script)  # type: ignore[arg-type]  # redis-py's stub names Script
    pipe.evalsha(script.sha, len(keys), *keys, *args)
