"""gRPC IngestService: the Events v2 semantics over gRPC.

Every refusal is INVALID_ARGUMENT whose details name each field by its gRPC request name
(``summary: is required; severity: must be one of ...``); the same list is in the trailing
metadata ``tocsin-field-errors`` as JSON ([{"field", "problem"}]). An exceeded rate limit
is RESOURCE_EXHAUSTED with a ``retry-after`` trailer (seconds); a Kafka failure UNAVAILABLE.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any, NoReturn

import grpc
from google.protobuf.json_format import MessageToDict
from tocsin.v1 import alert_pb2, ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common.clock import Clock, SystemClock
from tocsin_common.config import ConfigStore, Integration
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import auth, events_v2, formats
from tocsin_ingest.publisher import AlertPublisher
from tocsin_ingest.ratelimit import RateLimiter

_ACTION_NAMES = {v: k for k, v in events_v2.ACTIONS.items()}
_SEVERITY_NAMES = {v: k for k, v in events_v2.SEVERITIES.items()}
FIELD_ERRORS_TRAILER = "tocsin-field-errors"
MAX_STREAM_EVENTS = 10_000


def request_to_event(request: ingest_service_pb2.SendEventRequest) -> dict[str, Any]:
    """The same event as a v2 JSON body, so both APIs share one validation."""
    payload: dict[str, Any] = {"summary": request.summary, "source": request.source}
    if request.severity in _SEVERITY_NAMES:
        payload["severity"] = _SEVERITY_NAMES[request.severity]
    if request.component:
        payload["component"] = request.component
    if request.group:
        payload["group"] = request.group
    if getattr(request, "class"):
        payload["class"] = getattr(request, "class")
    if request.HasField("timestamp"):
        payload["timestamp"] = request.timestamp.ToDatetime(tzinfo=UTC).isoformat()
    if request.HasField("custom_details"):
        payload["custom_details"] = MessageToDict(request.custom_details)
    event: dict[str, Any] = {
        "routing_key": request.routing_key,
        "payload": payload,
        "links": [{"href": link.href, "text": link.text} for link in request.links],
        "images": [{"src": i.src, "href": i.href, "alt": i.alt} for i in request.images],
    }
    if request.action in _ACTION_NAMES:
        event["event_action"] = _ACTION_NAMES[request.action]
    if request.dedup_key:
        event["dedup_key"] = request.dedup_key
    if request.client:
        event["client"] = request.client
    if request.client_url:
        event["client_url"] = request.client_url
    return event


def grpc_field(path: str) -> str:
    """A v2 JSON field path as the SendEventRequest field it came from."""
    if path == "event_action":
        return "action"
    if path.startswith("payload."):
        return path.removeprefix("payload.")
    return path


def to_grpc_errors(errors: list[FieldError], prefix: str = "") -> list[FieldError]:
    return [FieldError(prefix + grpc_field(e.field), e.problem) for e in errors]


async def _abort_invalid(context: grpc.aio.ServicerContext, errors: list[FieldError]) -> NoReturn:
    trailer = json.dumps([e.as_dict() for e in errors])
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        "; ".join(str(e) for e in errors),
        trailing_metadata=((FIELD_ERRORS_TRAILER, trailer),),
    )
    raise AssertionError("abort returned")  # pragma: no cover


class IngestServicer(ingest_service_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        config: ConfigStore,
        publisher: AlertPublisher,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._limiter = limiter
        self._clock = clock or SystemClock()

    def normalize(
        self, request: ingest_service_pb2.SendEventRequest, prefix: str = ""
    ) -> tuple[alert_pb2.Alert, Integration]:
        """Authenticate and validate one request; InvalidInput with gRPC field names."""
        try:
            service, integration = auth.authenticate(
                self._config.current, formats.EVENTS_V2, request.routing_key, "routing_key"
            )
            alert = events_v2.normalize(request_to_event(request), service.id, self._clock.now())
        except InvalidInput as bad:
            raise InvalidInput(to_grpc_errors(bad.errors, prefix)) from None
        alert.source_format = alert_pb2.SOURCE_FORMAT_GRPC
        alert.integration_key = request.routing_key
        for key, value in request.labels.items():
            alert.labels[key] = value
        return alert, integration

    async def _admit(
        self, integration: Integration, cost: int, context: grpc.aio.ServicerContext
    ) -> None:
        if self._limiter is None:
            return
        decision = await self._limiter.admit(
            integration.key, integration.rate_limit_per_minute, cost
        )
        if not decision.allowed:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {decision.limit} events per minute exceeded; "
                f"retry after {decision.retry_after} s",
                trailing_metadata=(("retry-after", str(decision.retry_after)),),
            )

    async def _publish(
        self, alerts: list[alert_pb2.Alert], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            await self._publisher.publish_all(alerts)
        except Exception:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "events could not be stored; retry")

    async def SendEvent(
        self, request: ingest_service_pb2.SendEventRequest, context: grpc.aio.ServicerContext
    ) -> ingest_service_pb2.SendEventResponse:
        try:
            alert, integration = self.normalize(request)
        except InvalidInput as bad:
            await _abort_invalid(context, bad.errors)
        await self._admit(integration, 1, context)
        await self._publish([alert], context)
        return ingest_service_pb2.SendEventResponse(
            dedup_key=alert.dedup_key, event_id=alert.event_id
        )

    async def SendEvents(
        self,
        request_iterator: AsyncIterator[ingest_service_pb2.SendEventRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingest_service_pb2.SendEventsResponse:
        """All or nothing: every event is validated before any is published, and the
        answer comes once all are durable. Field paths are prefixed ``events[i].``."""
        alerts: list[alert_pb2.Alert] = []
        costs: dict[str, tuple[Integration, int]] = {}
        errors: list[FieldError] = []
        index = 0
        async for request in request_iterator:
            if index >= MAX_STREAM_EVENTS:
                await _abort_invalid(
                    context, [FieldError("events", f"at most {MAX_STREAM_EVENTS} per stream")]
                )
            try:
                alert, integration = self.normalize(request, f"events[{index}].")
            except InvalidInput as bad:
                errors.extend(bad.errors)
            else:
                alerts.append(alert)
                _, cost = costs.get(integration.key, (integration, 0))
                costs[integration.key] = (integration, cost + 1)
            index += 1
        if errors:
            await _abort_invalid(context, errors)
        for integration, cost in costs.values():
            await self._admit(integration, cost, context)
        if alerts:
            await self._publish(alerts, context)
        return ingest_service_pb2.SendEventsResponse(
            accepted=len(alerts), dedup_keys=[a.dedup_key for a in alerts]
        )
