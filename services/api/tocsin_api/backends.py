"""The services the api calls, over gRPC, always with the caller's own credential.

One channel per service for the process (with the trace-context interceptor); the caller's
``authorization`` goes on each call's metadata, so the service authenticates, authorises
and records the caller, never the api. A gRPC error becomes a :class:`Problem`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from tocsin.v1 import (
    auth_service_pb2_grpc,
    deploy_gate_service_pb2_grpc,
    heartbeat_service_pb2_grpc,
    incident_service_pb2_grpc,
    insight_service_pb2_grpc,
    notification_service_pb2_grpc,
    oncall_service_pb2_grpc,
    silence_service_pb2_grpc,
)
from tocsin_common.auth.access import bearer_metadata
from tocsin_common.grpcserver import client_channel
from tocsin_common.transport import TlsSettings

from tocsin_api.problems import Problem, from_grpc

T = TypeVar("T")

# A unary call's deadline: a service that does not answer is a 503/504, not a hung request.
CALL_TIMEOUT_S = 10.0


@dataclass
class Backends:
    incidents: incident_service_pb2_grpc.IncidentServiceStub
    oncall: oncall_service_pb2_grpc.OnCallServiceStub
    auth: auth_service_pb2_grpc.AuthServiceStub
    silences: silence_service_pb2_grpc.SilenceServiceStub
    notification: notification_service_pb2_grpc.NotificationServiceStub
    heartbeats: heartbeat_service_pb2_grpc.HeartbeatServiceStub
    insight: insight_service_pb2_grpc.InsightServiceStub
    gate: deploy_gate_service_pb2_grpc.DeployGateServiceStub
    channels: list[grpc.aio.Channel]

    @classmethod
    def connect(
        cls,
        *,
        escalation: str,
        correlation: str,
        notification: str,
        ingest: str,
        insight: str,
        tls: TlsSettings | None = None,
    ) -> Backends:
        esc = client_channel(escalation, None, tls)
        cor = client_channel(correlation, None, tls)
        note = client_channel(notification, None, tls)
        ing = client_channel(ingest, None, tls)
        ins = client_channel(insight, None, tls)
        return cls(
            incidents=incident_service_pb2_grpc.IncidentServiceStub(esc),
            oncall=oncall_service_pb2_grpc.OnCallServiceStub(esc),
            auth=auth_service_pb2_grpc.AuthServiceStub(esc),
            silences=silence_service_pb2_grpc.SilenceServiceStub(cor),
            notification=notification_service_pb2_grpc.NotificationServiceStub(note),
            heartbeats=heartbeat_service_pb2_grpc.HeartbeatServiceStub(ing),
            insight=insight_service_pb2_grpc.InsightServiceStub(ins),
            gate=deploy_gate_service_pb2_grpc.DeployGateServiceStub(ins),
            channels=[esc, cor, note, ing, ins],
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def call(
    method: Callable[..., Awaitable[T]],
    request: Any,
    credential: str,
    rename: Mapping[str, str] | None = None,
    deadline_s: float = CALL_TIMEOUT_S,
) -> T:
    """``method(request)`` with the caller's credential; a gRPC error as a Problem (its
    fields renamed to the API's by ``rename``)."""
    try:
        return await method(request, metadata=bearer_metadata(credential), timeout=deadline_s)
    except grpc.aio.AioRpcError as e:
        raise from_grpc(e.code(), e.details() or "", rename) from None


def problem_of(error: grpc.aio.AioRpcError, rename: Mapping[str, str] | None = None) -> Problem:
    return from_grpc(error.code(), error.details() or "", rename)
