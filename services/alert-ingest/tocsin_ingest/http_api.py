"""HTTP ingest API (aiohttp), thin: read, authenticate, normalize, limit, publish, answer.

A 202 is sent only after every normalized event is on Kafka with acks=all: a 202 means
the events are durable.

Routes:
  POST /v2/enqueue                          PagerDuty Events v2 (routing_key in the body)
  POST /v2/change/enqueue                   PagerDuty change events
  POST /v1/webhooks/alertmanager[/{key}]    Alertmanager webhook, version 4
  POST /v1/webhooks/grafana[/{key}]         Grafana unified alerting webhook
  GET|POST /v1/heartbeats/{id}/ping/{secret}  a heartbeat monitor's ping (its secret URL)
  GET /healthz
Without {key} in the path, webhooks authenticate with ``Authorization: Bearer <key>``.

A body must be JSON by its Content-Type (application/json, or any type ending in +json;
none at all is read as JSON): anything else is 415. The server closes a connection whose
request headers have not all arrived within the read timeout (``keepalive_timeout`` of the
runner, see :func:`runner_options`), and answers 408 and closes when the body has not all
arrived within the read timeout of the handler starting to read it
(TOCSIN_INGEST_READ_TIMEOUT_SECONDS, default 15). A client that hangs up
mid-body is logged on one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import propagate
from tocsin.v1 import alert_pb2
from tocsin_common import validation
from tocsin_common.clock import Clock, SystemClock
from tocsin_common.config import ConfigStore, Integration
from tocsin_common.tracing import aiohttp_tracing_middleware, attach, detach
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import auth, events_v2, fields, formats
from tocsin_ingest.heartbeats import HeartbeatMonitors, PingRefused
from tocsin_ingest.ping_urls import PingSecretStore
from tocsin_ingest.publisher import AlertPublisher
from tocsin_ingest.ratelimit import Decision, RateLimiter

log = logging.getLogger("tocsin.ingest.http")

MAX_BODY_BYTES = validation.MAX_REQUEST_BYTES
READ_TIMEOUT_S = 15.0
LINGER_S = 2.0
JSON_TYPES = frozenset({"application/json"})
PATH_KEY_FIELD = "path.key"
BEARER_FIELD = "Authorization"
TRACEPARENT = "traceparent"  # W3C trace context


class _Refused(Exception):
    """Ends a request early with this response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _invalid(
    errors: Sequence[FieldError], message: str = "Event object is invalid"
) -> web.Response:
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


def _too_large(size: int | None) -> web.Response:
    return web.json_response(
        {
            "status": "invalid event",
            "message": f"Request body is larger than {MAX_BODY_BYTES} bytes",
            "errors": [f"(body): is larger than {MAX_BODY_BYTES} bytes"],
            "fields": [{"field": "(body)", "problem": f"is larger than {MAX_BODY_BYTES} bytes"}],
            **({"size": size} if size is not None else {}),
        },
        status=413,
    )


def _throttled(decision: Decision) -> web.Response:
    return web.json_response(
        {
            "status": "throttle event",
            "message": f"Rate limit of {decision.limit} events per minute for this integration "
            f"exceeded; retry after {decision.retry_after} s",
            "retry_after": decision.retry_after,
        },
        status=429,
        headers={"Retry-After": str(decision.retry_after)},
    )


def _event_processed(dedup_key: str) -> web.Response:
    # {"status": "success", "message": "Event processed", "dedup_key": ...}, without the
    # general encoder (the hot path's answer).
    return web.Response(
        body=_EVENT_PROCESSED + json.dumps(dedup_key).encode() + b"}",
        status=202,
        content_type="application/json",
        charset="utf-8",
    )


_EVENT_PROCESSED = b'{"status": "success", "message": "Event processed", "dedup_key": '


def _unavailable() -> web.Response:
    return web.json_response(
        {"status": "unavailable", "message": "Event could not be stored; retry"},
        status=503,
        headers={"Retry-After": "1"},
    )


def runner_options(read_timeout: float = READ_TIMEOUT_S) -> dict[str, Any]:
    """Options of the aiohttp runner serving the app. aiohttp closes a connection that has
    no complete request pending ``keepalive_timeout`` after it opened or after its last
    answer: with partial headers (a slowloris) that bounds how long they may take. After
    an answer sent before the whole body (413, 408), aiohttp reads on ("lingers") so the
    client sees it: at most LINGER_S, not aiohttp's 10 s."""
    return {"keepalive_timeout": read_timeout, "lingering_time": min(LINGER_S, read_timeout)}


def _unsupported(content_type: str) -> web.Response:
    problem = (
        f"is {validation.clip(content_type, 100)!r}; the body must be JSON: send "
        "'Content-Type: application/json'"
    )
    return web.json_response(
        {
            "status": "invalid event",
            "message": "Request body is not JSON by its Content-Type",
            "errors": [f"Content-Type: {problem}"],
            "fields": [{"field": "Content-Type", "problem": problem}],
        },
        status=415,
    )


def _timed_out(timeout: float) -> web.Response:
    problem = f"did not all arrive within {timeout:g} s"
    response = web.json_response(
        {
            "status": "invalid event",
            "message": "Request body too slow",
            "errors": [f"(body): {problem}"],
            "fields": [{"field": "(body)", "problem": problem}],
        },
        status=408,
    )
    response.force_close()
    return response


def _cut_short(request: web.Request, error: BaseException) -> web.Response:
    """The client hung up (or its body ended) before its Content-Length: one log line; the
    answer is for a client still there."""
    log.info(
        "request body cut short",
        extra={"path": request.path, "error": type(error).__name__},
    )
    problem = "ended before its Content-Length (the client hung up?)"
    response = _invalid([FieldError("(body)", problem)], "Request body is incomplete")
    response.force_close()
    return response


def _check_content_type(request: web.Request) -> None:
    if "Content-Type" not in request.headers:
        return  # undeclared: read as JSON, as PagerDuty does
    content_type = request.content_type.lower()
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        return
    raise _Refused(_unsupported(request.headers["Content-Type"]))


async def _read_json(request: web.Request, within: float) -> Any:
    _check_content_type(request)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _Refused(_too_large(request.content_length))
    try:
        async with asyncio.timeout(within):
            raw = await _read_body(request)
    except TimeoutError:
        raise _Refused(_timed_out(within)) from None
    except (ConnectionError, HttpProcessingError, ClientPayloadError) as error:
        raise _Refused(_cut_short(request, error)) from None
    return _decode(raw)


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and not request.headers.get("Transfer-Encoding"):
        # The common case, in one read (what is missing from a cut body is a JSON error).
        try:
            return await request.content.readexactly(request.content_length)
        except asyncio.IncompleteReadError as short:
            raise ConnectionError(f"{len(short.partial)} of {short.expected} bytes") from None
    # read(n) returns what has arrived so far, not n bytes: gather until the end.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refused(_too_large(None))
    return b"".join(chunks)


def _decode(raw: bytes) -> Any:
    try:
        return fields.decode_json(raw)
    except InvalidInput as bad:
        raise _Refused(_invalid(bad.errors, "Request body is not valid JSON")) from None


@web.middleware
async def _propagate_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Without spans: make the sender's trace context current, so that the records produced
    for this request carry it on (no span is opened here)."""
    if TRACEPARENT not in request.headers:
        return await handler(request)
    token = attach(propagate.extract(request.headers))
    try:
        return await handler(request)
    finally:
        detach(token)


class IngestHttpApi:
    def __init__(
        self,
        config: ConfigStore,
        publisher: AlertPublisher,
        limiter: RateLimiter | None = None,
        heartbeats: HeartbeatMonitors | None = None,
        clock: Clock | None = None,
        ping_secrets: PingSecretStore | None = None,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        """``read_timeout``: the most a body may take to arrive (408 after it); serve the
        app with :func:`runner_options` of the same value to bound the headers too."""
        self._read_timeout = read_timeout
        self._config = config
        self._publisher = publisher
        self._limiter = limiter
        self._heartbeats = heartbeats
        self._ping_secrets = ping_secrets
        self._clock = clock or SystemClock()
        self._keys = auth.KeyCache()

    def app(self, *, traced: bool = True) -> web.Application:
        """The routes; ``traced``: a SERVER span per request, else only the caller's trace
        context handed on (see tocsin_common.tracing.setup_tracing)."""
        middleware = aiohttp_tracing_middleware("alert-ingest") if traced else _propagate_only
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[middleware])
        app.router.add_post("/v2/enqueue", self.enqueue)
        app.router.add_post("/v2/change/enqueue", self.change_enqueue)
        for fmt in (formats.ALERTMANAGER, formats.GRAFANA):
            app.router.add_post(f"/v1/webhooks/{fmt}", self._webhook(fmt))
            app.router.add_post(f"/v1/webhooks/{fmt}/{{key}}", self._webhook(fmt))
        for method in ("GET", "POST"):
            app.router.add_route(method, "/v1/heartbeats/{id}/ping/{secret}", self.heartbeat_ping)
            # The unauthenticated ping of before: refused as a wrong secret is, saying why.
            app.router.add_route(method, "/v1/heartbeats/{id}/ping", self.heartbeat_ping)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # -- shared steps ------------------------------------------------------------------

    def _authenticate(self, fmt: str, key: str, field: str) -> tuple[str, Integration]:
        """The service id and integration of ``key``."""
        try:
            service, integration = auth.authenticate(
                self._config.current, fmt, key, field, self._keys
            )
        except InvalidInput as bad:
            raise _Refused(_invalid(bad.errors, "Integration key is not accepted")) from None
        return service.id, integration

    async def _admit(self, integration: Integration, cost: int) -> None:
        if self._limiter is None:
            return
        decision = await self._limiter.admit(
            integration.key, integration.rate_limit_per_minute, cost
        )
        if not decision.allowed:
            raise _Refused(_throttled(decision))

    async def _publish(self, alerts: Sequence[alert_pb2.Alert]) -> None:
        try:
            await self._publisher.publish_all(alerts)
        except Exception:
            log.exception("publishing failed", extra={"events": len(alerts)})
            raise _Refused(_unavailable()) from None

    # -- PagerDuty Events v2 -----------------------------------------------------------

    async def enqueue(self, request: web.Request) -> web.Response:
        """PagerDuty Events API v2: POST /v2/enqueue."""
        received_at = self._clock.now()
        try:
            body = await _read_json(request, self._read_timeout)
            routing_key, event, errors = events_v2.parse_event(body)
            if errors:
                return _invalid(errors)
            service_id, integration = self._authenticate(
                formats.EVENTS_V2, routing_key, "routing_key"
            )
            alerts = formats.normalize(
                formats.EVENTS_V2, event, service_id, routing_key, received_at
            )
            await self._admit(integration, 1)
            await self._publish(alerts)
        except InvalidInput as bad:
            return _invalid(bad.errors)
        except _Refused as refused:
            return refused.response
        return _event_processed(alerts[0].dedup_key)

    async def change_enqueue(self, request: web.Request) -> web.Response:
        """PagerDuty change events: POST /v2/change/enqueue."""
        received_at = self._clock.now()
        try:
            body = await _read_json(request, self._read_timeout)
            routing_key, event, errors = events_v2.parse_event(body)
            if errors:
                return _invalid(errors)
            service_id, integration = self._authenticate(
                formats.EVENTS_V2, routing_key, "routing_key"
            )
            change = events_v2.normalize_change(event, service_id, received_at)
            change.integration_key = routing_key
            await self._admit(integration, 1)
            try:
                await self._publisher.publish_change(change)
            except Exception:
                log.exception("publishing a change event failed")
                return _unavailable()
        except InvalidInput as bad:
            return _invalid(bad.errors)
        except _Refused as refused:
            return refused.response
        return web.json_response(
            {"status": "success", "message": "Change event processed"}, status=202
        )

    # -- Alertmanager and Grafana webhooks ---------------------------------------------

    def _webhook(self, fmt: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return await self.webhook(request, fmt)

        return handler

    async def webhook(self, request: web.Request, fmt: str) -> web.Response:
        received_at = self._clock.now()
        try:
            path_key = request.match_info.get("key")
            if path_key is not None:
                key, field = path_key, PATH_KEY_FIELD
            else:
                key, field = auth.bearer_token(request.headers) or "", BEARER_FIELD
                if not key:
                    return _invalid(
                        [
                            FieldError(
                                BEARER_FIELD,
                                "is required: send 'Authorization: Bearer <integration key>' "
                                f"or POST to /v1/webhooks/{fmt}/<integration key>",
                            )
                        ],
                        "Integration key is missing",
                    )
            service_id, integration = self._authenticate(fmt, key, field)
            body = await _read_json(request, self._read_timeout)
            alerts = formats.normalize(fmt, body, service_id, key, received_at)
            await self._admit(integration, len(alerts))
            await self._publish(alerts)
        except InvalidInput as bad:
            return _invalid(bad.errors)
        except _Refused as refused:
            return refused.response
        return web.json_response(
            {
                "status": "success",
                "message": f"{len(alerts)} alert(s) processed",
                "dedup_keys": [a.dedup_key for a in alerts],
            },
            status=202,
        )

    # -- heartbeats --------------------------------------------------------------------

    async def heartbeat_ping(self, request: web.Request) -> web.Response:
        monitor_id = request.match_info["id"]
        secret = request.match_info.get("secret", "")
        if self._heartbeats is None or self._ping_secrets is None or not secret:
            return _ping_refused()
        try:
            result = await self._heartbeats.authenticated_ping(
                monitor_id, secret, self._ping_secrets
            )
        except PingRefused:
            log.info("heartbeat ping refused", extra={"heartbeat": monitor_id[:100]})
            return _ping_refused()
        except Exception:
            log.exception("heartbeat ping failed", extra={"heartbeat": monitor_id})
            return _unavailable()
        return web.json_response(
            {
                "status": "ok",
                "heartbeat": result.monitor.id,
                "resolved": result.resolved,
                "next_deadline": _iso(result.next_deadline),
            }
        )


_PING_REFUSED_PROBLEM = (
    "is not the ping URL of a heartbeat monitor: the monitor is unknown, has no ping URL "
    "yet, or the secret is wrong or rotated. Ping the URL HeartbeatService.IssuePingUrl "
    "returned (docs/ingest.md#heartbeats)"
)


def _ping_refused() -> web.Response:
    """One answer for an unknown monitor, one without a ping URL and a wrong secret, so
    neither ids nor secrets can be probed (the answer names none of them)."""
    return web.json_response(
        {
            "status": "not found",
            "message": "No heartbeat monitor at this URL",
            "errors": [f"path: {_PING_REFUSED_PROBLEM}"],
            "fields": [{"field": "path", "problem": _PING_REFUSED_PROBLEM}],
        },
        status=404,
    )


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
