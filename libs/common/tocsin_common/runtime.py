"""Process wiring shared by the services: logs, tracing, metrics, config, signals.

A service's entry point builds its adapters and domain objects, then hands `run_service`
a coroutine; nothing connects to anything at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping

from tocsin_common.logs import setup_logging
from tocsin_common.metrics import serve_metrics
from tocsin_common.settings import Settings
from tocsin_common.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger("tocsin.runtime")


def bootstrap(service: str) -> Settings:
    """Read settings, set up JSON logs, tracing and /metrics for this process."""
    settings = Settings.from_env(service)
    setup_logging(service, settings.log_level)
    setup_tracing(service)
    serve_metrics(settings.metrics_port)
    return settings


def event_loop_factory(env: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop, or asyncio's own when ``TOCSIN_EVENT_LOOP=asyncio``.

    Every service spends a large share of its CPU in the event loop (sockets to Kafka,
    Redis and peers); uvloop's is written in C on libuv and costs less per turn."""
    choice = env.get("TOCSIN_EVENT_LOOP", "uvloop").strip().lower()
    if choice == "asyncio":
        return asyncio.new_event_loop
    if choice != "uvloop":
        raise ValueError(f"TOCSIN_EVENT_LOOP: {choice!r} is not one of uvloop, asyncio")
    import uvloop

    return uvloop.new_event_loop


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop_event)` until SIGTERM/SIGINT sets the event; flush traces after."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(os.environ)) as loop_runner:
            loop_runner.run(runner())
    finally:
        with contextlib.suppress(Exception):
            shutdown_tracing()


async def until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for a stop signal; if a background task dies first, re-raise its error so the
    process exits and its supervisor restarts it, rather than idling half-alive."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
            raise task.exception()  # type: ignore[misc]
