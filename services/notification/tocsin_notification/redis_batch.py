"""Redis commands from many concurrent pages, sent as one pipeline per event-loop turn.

Each page needs a few Redis commands (claim its idempotency key, mark it delivered, add a
delivery row). Sent one by one that is a round trip, and a connection taken from the pool,
per command. Here every command issued during one turn of the event loop is queued, and the
queue goes out as one pipeline (no MULTI: the commands are independent) on the next turn;
each caller gets its own results back. When idle, a command waits for nothing but its own
round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

log = logging.getLogger("tocsin.notification.redis")

Commands = Callable[[Pipeline], Any]


class CommandBatcher:
    def __init__(self, redis: Redis, max_batch: int = 1000) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self.batches = 0  # pipelines sent, for tests and metrics
        self.commands = 0

    async def run(self, commands: Commands) -> list[Any]:
        """Queue `commands(pipe)` (which issues one or more commands on `pipe`); return
        their results, in order. A failed command raises here, for this caller only."""
        return raise_failed(await self.submit(commands))

    def submit(self, commands: Commands) -> asyncio.Future[list[Any]]:
        """Queue `commands(pipe)` now, without waiting: the future holds their results, a
        failed command's as its exception object (`raise_failed`), or the connection's
        error. For a caller with other work before it needs them (no task per call)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return future

    def _flush_soon(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self._max_batch):
            task = asyncio.get_running_loop().create_task(
                self._send(queue[start : start + self._max_batch])
            )
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, queue: list[tuple[Commands, asyncio.Future[list[Any]]]]) -> None:
        spans: list[tuple[int, int]] = []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for commands, _ in queue:
                    before = len(pipe)
                    commands(pipe)
                    spans.append((before, len(pipe)))
                results = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the connection failed: every caller gets the error
            error = e if isinstance(e, Exception) else ConnectionError("cancelled")
            for _, future in queue:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(e, Exception):
                raise
            return
        self.batches += 1
        self.commands += len(results)
        for (start, end), (_, future) in zip(spans, queue, strict=True):
            if not future.done():
                future.set_result(results[start:end])


def raise_failed(results: list[Any]) -> list[Any]:
    """`results` of a batch, or the first failed command's error raised."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
