"""HTTP ingest API (aiohttp), thin: read, authenticate, normalize, publish, answer.

A 202 is sent only after the normalized event is on Kafka with acks=all: a 202 means the
event is durable.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from tocsin_common.config import ConfigStore
from tocsin_common.tracing import aiohttp_tracing_middleware
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import events_v2
from tocsin_ingest.publisher import AlertPublisher

log = logging.getLogger("tocsin.ingest.http")

MAX_BODY_BYTES = 512 * 1024


def _invalid(errors: list[FieldError], message: str = "Event object is invalid") -> web.Response:
    # PagerDuty's shape (status, message, errors as strings), plus the structured list.
    return web.json_response(
        {
            "status": "invalid event",
            "message": message,
            "errors": [str(e) for e in errors],
            "fields": [e.as_dict() for e in errors],
        },
        status=400,
    )


async def _read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, actual_size=request.content_length
        )
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(raw))
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput([FieldError("(body)", f"is not valid JSON: {e}")]) from None


class IngestHttpApi:
    def __init__(self, config: ConfigStore, publisher: AlertPublisher) -> None:
        self._config = config
        self._publisher = publisher

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[aiohttp_tracing_middleware("alert-ingest")]
        )
        app.router.add_post("/v2/enqueue", self.enqueue)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def enqueue(self, request: web.Request) -> web.Response:
        """PagerDuty Events API v2: POST /v2/enqueue."""
        received_at = datetime.now(UTC)
        try:
            body = await _read_json(request)
        except InvalidInput as bad:
            return _invalid(bad.errors)
        routing_key, event, errors = events_v2.parse_event(body)
        if errors:
            return _invalid(errors)
        found = self._config.current.service_for_key(routing_key)
        if found is None:
            return _invalid([FieldError("routing_key", "is not a known integration key")])
        service, _integration = found
        try:
            alert = events_v2.normalize(event, service.id, received_at)
        except InvalidInput as bad:
            return _invalid(bad.errors)
        alert.integration_key = routing_key
        await self._publisher.publish(alert)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": alert.dedup_key},
            status=202,
        )
