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

    Sent as EVAL with the script's text rather than EVALSHA: redis-py then asks the
    server whether it knows the script (SCRIPT EXISTS) before every pipeline, a round trip
    more than the few hundred bytes of text cost; Redis compiles a script text once.
    """
    pipe.eval(script.script, len(keys), *keys, *args)  # type: ignore[arg-type]
