"""gRPC NotificationService (thin)."""

from __future__ import annotations

import uuid

import grpc
from redis.asyncio import Redis
from tocsin.v1 import (
    incident_pb2,
    notification_pb2,
    notification_service_pb2,
    notification_service_pb2_grpc,
)

from tocsin_notification.delivery import Deliverer


class NotificationServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    def __init__(self, redis: Redis, deliverer: Deliverer) -> None:
        self._redis = redis
        self._deliverer = deliverer

    async def ListDeliveries(
        self,
        request: notification_service_pb2.ListDeliveriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_service_pb2.ListDeliveriesResponse:
        if not request.incident_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incident_id: is required")
        response = notification_service_pb2.ListDeliveriesResponse()
        for raw in await self._redis.lrange(f"tocsin:deliveries:{request.incident_id}", 0, -1):
            response.statuses.add().ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        return response

    async def SendTestNotification(
        self,
        request: notification_service_pb2.SendTestNotificationRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb2.NotificationStatus:
        if not request.user_id or not request.contact_method_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "user_id and contact_method_id: both are required"
            )
        test_id = f"test-{uuid.uuid4()}"
        page = notification_pb2.NotificationRequest(
            request_id=test_id,
            idempotency_key=test_id,
            user_id=request.user_id,
            contact_method_id=request.contact_method_id,
            incident=incident_pb2.Incident(
                incident_id=test_id,
                title="Test notification from Tocsin",
                status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
            ),
        )
        return await self._deliverer.deliver(page)
