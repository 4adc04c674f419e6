"""insight's wiring: settings -> Postgres (migrations) -> consumer and gRPC API."""

from __future__ import annotations

import asyncio

from tocsin_common.runtime import bootstrap

SERVICE = "insight"


async def serve(stop: asyncio.Event) -> None:
    bootstrap(SERVICE)
    await stop.wait()
