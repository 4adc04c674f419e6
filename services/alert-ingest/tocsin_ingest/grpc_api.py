"""gRPC IngestService: the Events v2 semantics over gRPC, with HTTP's limits.

Every refusal is INVALID_ARGUMENT whose details name each field by its gRPC request name
(``summary: is required; severity: must be one of ...``); the same list is in the trailing
metadata ``tocsin-field-errors`` as JSON ([{"field", "problem"}]). An exceeded rate limit
is RESOURCE_EXHAUSTED with a ``retry-after`` trailer (seconds); a Kafka failure UNAVAILABLE.
The limits are HTTP's (tocsin_common.validation, docs/ingest.md): a request over the
HTTP body limit, labels over their count or size, text fields over MAX_TEXT, details
nested too deep or an alert too big for a Kafka record are INVALID_ARGUMENT. A stream is
checked as it arrives: it is refused as soon as it carries too many events, too many
bytes, or MAX_STREAM_ERRORS bad events, so no stream holds more than MAX_STREAM_BYTES.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any, NoReturn

import grpc
from google.protobuf.struct_pb2 import ListValue, Struct, Value
from tocsin.v1 import alert_pb2, ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common import validation
from tocsin_common.clock import Clock, SystemClock
from tocsin_common.config import ConfigStore, Integration
from tocsin_common.grpc_errors import FIELD_ERRORS_TRAILER, abort_invalid
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import auth, events_v2, fields, formats
from tocsin_ingest.publisher import AlertPublisher
from tocsin_ingest.ratelimit import RateLimiter

_ACTION_NAMES = {v: k for k, v in events_v2.ACTIONS.items()}
_SEVERITY_NAMES = {v: k for k, v in events_v2.SEVERITIES.items()}
__all__ = ["FIELD_ERRORS_TRAILER", "IngestServicer", "request_to_event"]

MAX_STREAM_EVENTS = 10_000
MAX_STREAM_BYTES = 16 * validation.MAX_REQUEST_BYTES
MAX_STREAM_ERRORS = 100
# What google.protobuf.Timestamp can hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def _value(value: Value) -> Any:
    """A Struct Value as plain JSON-like data (floats kept as they are, NaN included, for
    the edge checks to name; json_format refuses them with an exception instead)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "list_value":
        return _list(value.list_value)
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _struct(struct: Struct) -> dict[str, Any]:
    return {key: _value(item) for key, item in struct.fields.items()}


def _list(values: ListValue) -> list[Any]:
    return [_value(item) for item in values.values]


def request_problems(request: ingest_service_pb2.SendEventRequest) -> list[FieldError]:
    """What a request breaks of the limits events_v2 does not see (its size, timestamp and
    labels), by gRPC field name."""
    errors: list[FieldError] = []
    size = request.ByteSize()
    if size > validation.MAX_REQUEST_BYTES:
        errors.append(
            FieldError(
                "(request)",
                f"is {size:,} bytes; at most {validation.MAX_REQUEST_BYTES:,} allowed "
                "(the HTTP body limit)",
            )
        )
        return errors
    if request.HasField("timestamp") and not (
        _MIN_SECONDS <= request.timestamp.seconds <= _MAX_SECONDS
        and 0 <= request.timestamp.nanos < 1_000_000_000
    ):
        errors.append(
            FieldError("timestamp", "must be between 0001-01-01T00:00:00Z and 9999-12-31")
        )
    fields.string_map({"labels": dict(request.labels)}, "labels", "labels", errors)
    return errors


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
        try:
            payload["timestamp"] = request.timestamp.ToDatetime(tzinfo=UTC).isoformat()
        except (ValueError, OverflowError):
            payload["timestamp"] = "(out of range)"  # refused by request_problems
    if request.HasField("custom_details"):
        payload["custom_details"] = _struct(request.custom_details)
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
    await abort_invalid(context, errors)


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
        errors = request_problems(request)
        if errors:
            raise InvalidInput(to_grpc_errors(errors, prefix))
        try:
            service, integration = auth.authenticate(
                self._config.current, formats.EVENTS_V2, request.routing_key, "routing_key"
            )
            event = request_to_event(request)
            problems = validation.json_problems(event)
            if problems:
                raise InvalidInput(problems)
            alert = events_v2.normalize(event, service.id, self._clock.now())
        except InvalidInput as bad:
            raise InvalidInput(to_grpc_errors(bad.errors, prefix)) from None
        alert.source_format = alert_pb2.SOURCE_FORMAT_GRPC
        alert.integration_key = request.routing_key
        for key, value in request.labels.items():
            alert.labels[key] = value
        if len(alert.labels) > fields.MAX_LABELS:
            errors.append(
                FieldError(
                    "labels",
                    f"has {len(alert.labels)} entries with component, group and class; "
                    f"at most {fields.MAX_LABELS} allowed",
                )
            )
        too_big = fields.alert_size_problem(alert)
        if too_big is not None:
            errors.append(too_big)
        if errors:
            raise InvalidInput(to_grpc_errors(errors, prefix))
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
        """All or nothing: every event is validated as it arrives, before any is
        published, and the answer comes once all are durable. Field paths are prefixed
        ``events[i].``. The stream is refused as soon as it is over MAX_STREAM_EVENTS events
        or MAX_STREAM_BYTES bytes, or has MAX_STREAM_ERRORS bad events (bounded memory)."""
        alerts: list[alert_pb2.Alert] = []
        costs: dict[str, tuple[Integration, int]] = {}
        errors: list[FieldError] = []
        bad_events = 0
        size = 0
        index = 0
        async for request in request_iterator:
            if index >= MAX_STREAM_EVENTS:
                await _abort_invalid(
                    context,
                    [
                        FieldError(
                            "events",
                            f"more than {MAX_STREAM_EVENTS:,}; at most that many per stream",
                        )
                    ],
                )
            size += request.ByteSize()
            if size > MAX_STREAM_BYTES:
                await _abort_invalid(
                    context,
                    [
                        FieldError(
                            "events",
                            f"more than {MAX_STREAM_BYTES:,} bytes by events[{index}]; at most "
                            "that many per stream (send several streams)",
                        )
                    ],
                )
            try:
                alert, integration = self.normalize(request, f"events[{index}].")
            except InvalidInput as bad:
                errors.extend(bad.errors)
                bad_events += 1
                if bad_events >= MAX_STREAM_ERRORS:
                    errors.insert(
                        0,
                        FieldError(
                            "events",
                            f"{bad_events} bad events by events[{index}]; the stream was "
                            "refused there",
                        ),
                    )
                    await _abort_invalid(context, errors)
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
