"""HeartbeatService (gRPC, thin): issue a heartbeat's secret ping URL, list monitors.

Every call carries a bearer credential (the interceptor leaves only IngestService open) and
is authorized here: ``heartbeat.rotate`` (manager of the heartbeat's service's team) to
issue, ``heartbeat.read`` to see. A heartbeat the caller may not read answers NOT_FOUND, as
an unknown one does. The issued URL is in the answer once; only its hash is stored.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from tocsin.v1 import heartbeat_service_pb2 as pb
from tocsin.v1 import heartbeat_service_pb2_grpc as pb_grpc
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import heartbeat_resource
from tocsin_common.clock import Clock
from tocsin_common.config import ConfigStore, Heartbeat
from tocsin_common.timeutil import set_timestamp

from tocsin_ingest import ping_urls
from tocsin_ingest.heartbeats import HeartbeatStore


class HeartbeatServicer(pb_grpc.HeartbeatServiceServicer):
    def __init__(
        self,
        config: ConfigStore,
        access: AccessControl,
        store: HeartbeatStore,
        secrets: ping_urls.PingSecretStore,
        clock: Clock,
        public_url: str,
    ) -> None:
        self._config = config
        self._access = access
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._public_url = public_url

    async def IssuePingUrl(
        self, request: pb.IssuePingUrlRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssuePingUrlResponse:
        heartbeat_id = request.heartbeat_id
        if not heartbeat_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "heartbeat_id: is required")
        overlap = (
            request.previous_valid_for.ToTimedelta()
            if request.HasField("previous_valid_for")
            else timedelta(0)
        )
        if problem := ping_urls.previous_valid_for_problem(overlap):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        config = self._config.current
        resource = heartbeat_resource(config, heartbeat_id)
        known = any(h.id == heartbeat_id for h in config.heartbeats)
        if not known or not self._access.allows("heartbeat.read", resource):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"heartbeat_id: no heartbeat {heartbeat_id!r}"
            )
        principal = await self._access.authorize(context, "heartbeat.rotate", resource)
        now = self._clock.now()
        secret = ping_urls.new_secret()
        record = ping_urls.rotated(
            await self._secrets.get(heartbeat_id), secret, now, principal.id, overlap
        )
        await self._secrets.put(heartbeat_id, record)
        reply = pb.IssuePingUrlResponse(
            heartbeat_id=heartbeat_id,
            ping_url=ping_urls.ping_url(self._public_url, heartbeat_id, secret),
        )
        set_timestamp(reply.issued_at, now)
        if record.previous_until is not None:
            set_timestamp(reply.previous_valid_until, record.previous_until)
        return reply

    async def ListHeartbeats(
        self, request: pb.ListHeartbeatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListHeartbeatsResponse:
        config = self._config.current
        visible = [
            h
            for h in config.heartbeats
            if (not request.service_id or h.service == request.service_id)
            and self._access.allows("heartbeat.read", heartbeat_resource(config, h.id))
        ]
        states = await self._store.status(h.id for h in visible)
        now = self._clock.now()
        reply = pb.ListHeartbeatsResponse()
        for monitor in sorted(visible, key=lambda h: h.id):
            item = reply.heartbeats.add()
            _describe(item, monitor)
            state = states.get(monitor.id)
            if state is not None:
                item.down = state.down
                if state.last_ping is not None:
                    set_timestamp(item.last_ping_at, state.last_ping)
            issued = await self._secrets.get(monitor.id)
            if issued is not None:
                item.ping_url_issued = True
                set_timestamp(item.ping_url_issued_at, issued.issued_at)
                item.ping_url_issued_by = issued.issued_by
                if issued.previous_live(now) and issued.previous_until is not None:
                    set_timestamp(item.previous_url_valid_until, issued.previous_until)
        return reply


def _describe(item: pb.HeartbeatMonitor, monitor: Heartbeat) -> None:
    item.heartbeat_id = monitor.id
    item.service_id = monitor.service
    item.interval.FromTimedelta(monitor.interval)
    item.grace.FromTimedelta(monitor.grace)
