"""Delivery of one notification request: idempotency -> contact look-up -> send -> record.

Contact data is looked up over gRPC from escalation at send time, so a changed address
applies to the very next page.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc
from aiokafka import ConsumerRecord
from redis.asyncio import Redis
from tocsin.v1 import incident_pb2, notification_pb2, oncall_service_pb2, oncall_service_pb2_grpc
from tocsin_common.kafka import BadRecord, EventProducer
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import NOTIFICATIONS_STATUS

from tocsin_notification.idempotency import Claim, IdempotencyStore
from tocsin_notification.providers import DeliveryError, Page, Provider

log = logging.getLogger("tocsin.notification")

_STATUS_NAMES = {
    incident_pb2.INCIDENT_STATUS_TRIGGERED: "triggered",
    incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED: "acknowledged",
    incident_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
}


class Deliverer:
    def __init__(
        self,
        redis: Redis,
        producer: EventProducer,
        oncall: oncall_service_pb2_grpc.OnCallServiceStub,
        providers: dict[str, Provider],
    ) -> None:
        self._redis = redis
        self._idempotency = IdempotencyStore(redis)
        self._producer = producer
        self._oncall = oncall
        self._providers = providers

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        request = notification_pb2.NotificationRequest()
        try:
            request.ParseFromString(record.value or b"")
        except Exception as e:
            raise BadRecord(f"undecodable NotificationRequest: {e}") from None
        for name in ("idempotency_key", "user_id", "contact_method_id"):
            if not getattr(request, name):
                raise BadRecord(f"{name}: missing")
        await self.deliver(request)

    async def deliver(
        self, request: notification_pb2.NotificationRequest
    ) -> notification_pb2.NotificationStatus:
        claim = await self._idempotency.claim(request.idempotency_key)
        if claim is not Claim.ACQUIRED:
            return await self._record(
                request, "", notification_pb2.DELIVERY_OUTCOME_DUPLICATE, f"already {claim.value}"
            )
        try:
            contact = await self._oncall.GetContactMethod(
                oncall_service_pb2.GetContactMethodRequest(
                    user_id=request.user_id, contact_method_id=request.contact_method_id
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as e:
            await self._idempotency.release(request.idempotency_key)
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return await self._record(
                    request,
                    "",
                    notification_pb2.DELIVERY_OUTCOME_FAILED,
                    e.details() or "contact method not found",
                )
            raise  # escalation unavailable: retried by the consumer loop
        provider = self._providers.get(contact.type)
        if provider is None:
            await self._idempotency.release(request.idempotency_key)
            return await self._record(
                request,
                contact.type,
                notification_pb2.DELIVERY_OUTCOME_FAILED,
                f"no provider for channel {contact.type!r}",
            )
        incident = request.incident
        page = Page(
            incident_id=incident.incident_id,
            service_id=incident.service_id,
            title=incident.title,
            status=_STATUS_NAMES.get(incident.status, "triggered"),
            urgency="high" if incident.urgency == incident_pb2.URGENCY_HIGH else "low",
            user_id=contact.user_id,
            user_name=contact.user_name,
            address=contact.address,
            idempotency_key=request.idempotency_key,
        )
        try:
            receipt = await provider.send(page)
        except DeliveryError as e:
            await self._idempotency.release(request.idempotency_key)
            if e.retryable:
                raise
            return await self._record(
                request, contact.type, notification_pb2.DELIVERY_OUTCOME_FAILED, str(e)
            )
        await self._idempotency.delivered(request.idempotency_key)
        return await self._record(
            request, contact.type, notification_pb2.DELIVERY_OUTCOME_DELIVERED, receipt
        )

    async def _record(
        self,
        request: notification_pb2.NotificationRequest,
        channel: str,
        outcome: notification_pb2.DeliveryOutcome.ValueType,
        detail: str,
    ) -> notification_pb2.NotificationStatus:
        status = notification_pb2.NotificationStatus(
            request_id=request.request_id,
            idempotency_key=request.idempotency_key,
            incident_id=request.incident.incident_id,
            user_id=request.user_id,
            contact_method_id=request.contact_method_id,
            channel=channel,
            outcome=outcome,
            attempt=1,
            detail=detail,
        )
        set_timestamp(status.at, datetime.now(UTC))
        await self._producer.send(NOTIFICATIONS_STATUS, status.incident_id, status)
        await self._redis.rpush(
            f"tocsin:deliveries:{status.incident_id}", status.SerializeToString()
        )
        log.info(
            "page %s",
            notification_pb2.DeliveryOutcome.Name(outcome).lower(),
            extra={"incident_id": status.incident_id, "user_id": status.user_id, "detail": detail},
        )
        return status
