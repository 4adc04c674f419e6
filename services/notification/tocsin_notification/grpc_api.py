"""gRPC NotificationService (thin)."""

from __future__ import annotations

import uuid
from typing import Literal

import grpc
from redis.asyncio import Redis
from tocsin.v1 import (
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    notification_pb2,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import contact_resource, incident_resource
from tocsin_common.automation.approval import Approval, ApprovalConflict
from tocsin_common.timeutil import set_timestamp

from tocsin_notification.delivery import Deliverer


class NotificationServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    def __init__(
        self,
        redis: Redis,
        deliverer: Deliverer,
        access: AccessControl,
        incidents: incident_service_pb2_grpc.IncidentServiceStub,
    ) -> None:
        self._redis = redis
        self._deliverer = deliverer
        self._access = access
        self._incidents = incidents  # on a channel with notification's service credential

    async def _authorize_incident_read(
        self, incident_id: str, context: grpc.aio.ServicerContext
    ) -> None:
        """Deliveries are read with the incident: the caller must be able to read it
        (escalation knows its service; an unknown incident answers NOT_FOUND)."""
        incident = await self._incident(incident_id, context)
        resource = incident_resource(self._access.config.current, incident_id, incident.service_id)
        if not self._access.allows("incident.read", resource):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"incident_id: no incident {incident_id!r}"
            )

    async def _incident(
        self, incident_id: str, context: grpc.aio.ServicerContext
    ) -> incident_pb2.Incident:
        """The incident, from escalation; NOT_FOUND when there is none."""
        try:
            incident: incident_pb2.Incident = await self._incidents.Get(
                incident_service_pb2.GetIncidentRequest(incident_id=incident_id), timeout=5
            )
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code is grpc.StatusCode.NOT_FOUND:
                await context.abort(code, f"incident_id: no incident {incident_id!r}")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"incident look-up: {code.name}")
            raise AssertionError("unreachable") from None
        return incident

    async def ListDeliveries(
        self,
        request: notification_service_pb2.ListDeliveriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_service_pb2.ListDeliveriesResponse:
        if not request.incident_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incident_id: is required")
        await self._authorize_incident_read(request.incident_id, context)
        response = notification_service_pb2.ListDeliveriesResponse()
        for raw in await self._redis.lrange(f"tocsin:deliveries:{request.incident_id}", 0, -1):
            response.statuses.add().ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        return response

    async def DecideAutomation(
        self,
        request: notification_service_pb2.DecideAutomationRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_service_pb2.DecideAutomationResponse:
        for name in ("incident_id", "rule_id"):
            if not getattr(request, name):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: is required")
        if request.verdict not in ("approve", "reject"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"verdict: {request.verdict!r} is not approve or reject",
            )
        runner = self._deliverer.automation
        if runner is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "automation is not run here")
            raise AssertionError("unreachable")
        incident = await self._incident(request.incident_id, context)
        resource = incident_resource(
            self._access.config.current, request.incident_id, incident.service_id
        )
        principal = await self._access.authorize(context, "automation.approve", resource)
        verdict: Literal["approve", "reject"] = (
            "approve" if request.verdict == "approve" else "reject"
        )
        try:
            decided = await runner.decide(
                request.incident_id, request.rule_id, verdict, principal.id, request.reason
            )
        except ApprovalConflict as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise AssertionError("unreachable") from None
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e.args[0]))
            raise AssertionError("unreachable") from None
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        response = notification_service_pb2.DecideAutomationResponse()
        for approval in decided:
            _approval_message(response.approvals.add(), approval)
        return response

    async def ListApprovals(
        self,
        request: notification_service_pb2.ListApprovalsRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_service_pb2.ListApprovalsResponse:
        if not request.incident_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incident_id: is required")
        await self._authorize_incident_read(request.incident_id, context)
        response = notification_service_pb2.ListApprovalsResponse()
        runner = self._deliverer.automation
        if runner is None:
            return response
        for approval in await runner.approvals.of_incident(request.incident_id, runner.now()):
            _approval_message(response.approvals.add(), approval)
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
        await self._access.authorize(
            context,
            "notification.test",
            contact_resource(
                self._access.config.current, request.user_id, request.contact_method_id
            ),
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


def _approval_message(
    out: notification_service_pb2.AutomationApproval, approval: Approval
) -> None:
    out.key = approval.key
    out.rule_id = approval.rule_id
    out.incident_id = approval.incident_id
    out.trigger = approval.key.rsplit("/", 1)[-1].replace("-", " ")
    out.state = approval.state
    out.decided_by = approval.decided_by
    out.reason = approval.reason
    set_timestamp(out.requested_at, approval.requested_at)
    set_timestamp(out.expires_at, approval.expires_at)
    if approval.decided_at is not None:
        set_timestamp(out.decided_at, approval.decided_at)
