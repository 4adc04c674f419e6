"""gRPC IngestService: the Events v2 semantics over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from tocsin.v1 import alert_pb2, ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common.config import ConfigStore
from tocsin_common.validation import InvalidInput

from tocsin_ingest import events_v2
from tocsin_ingest.publisher import AlertPublisher

_ACTION_NAMES = {v: k for k, v in events_v2.ACTIONS.items()}
_SEVERITY_NAMES = {v: k for k, v in events_v2.SEVERITIES.items()}


def request_to_event(request: ingest_service_pb2.SendEventRequest) -> dict[str, Any]:
    """The same event as a v2 JSON body, so both APIs share one validation."""
    payload: dict[str, Any] = {
        "summary": request.summary,
        "source": request.source,
        "severity": _SEVERITY_NAMES.get(request.severity, ""),
    }
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
        "event_action": _ACTION_NAMES.get(request.action, ""),
        "payload": payload,
        "links": [{"href": link.href, "text": link.text} for link in request.links],
        "images": [{"src": i.src, "href": i.href, "alt": i.alt} for i in request.images],
    }
    if request.dedup_key:
        event["dedup_key"] = request.dedup_key
    if request.client:
        event["client"] = request.client
    if request.client_url:
        event["client_url"] = request.client_url
    return event


class IngestServicer(ingest_service_pb2_grpc.IngestServiceServicer):
    def __init__(self, config: ConfigStore, publisher: AlertPublisher) -> None:
        self._config = config
        self._publisher = publisher

    async def _accept(
        self, request: ingest_service_pb2.SendEventRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.Alert:
        found = self._config.current.service_for_key(request.routing_key)
        if found is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "routing_key: is not a known integration key"
            )
        service, _ = found  # type: ignore[misc]
        try:
            alert = events_v2.normalize(request_to_event(request), service.id, datetime.now(UTC))
        except InvalidInput as bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(bad))
        alert.source_format = alert_pb2.SOURCE_FORMAT_GRPC
        alert.integration_key = request.routing_key
        for key, value in request.labels.items():
            alert.labels[key] = value
        await self._publisher.publish(alert)
        return alert

    async def SendEvent(
        self, request: ingest_service_pb2.SendEventRequest, context: grpc.aio.ServicerContext
    ) -> ingest_service_pb2.SendEventResponse:
        alert = await self._accept(request, context)
        return ingest_service_pb2.SendEventResponse(
            dedup_key=alert.dedup_key, event_id=alert.event_id
        )

    async def SendEvents(
        self,
        request_iterator: AsyncIterator[ingest_service_pb2.SendEventRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingest_service_pb2.SendEventsResponse:
        response = ingest_service_pb2.SendEventsResponse()
        async for request in request_iterator:
            alert = await self._accept(request, context)
            response.accepted += 1
            response.dedup_keys.append(alert.dedup_key)
        return response
