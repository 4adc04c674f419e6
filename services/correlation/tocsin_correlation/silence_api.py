"""SilenceService over gRPC, silences kept in Redis (hash ``tocsin:silences``: silence id ->
Silence protobuf bytes). Runs on ThreadedGrpcServer's own loop, so its Redis client is
created there, on first use."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from redis.asyncio import Redis
from tocsin.v1 import silence_service_pb2 as pb
from tocsin.v1 import silence_service_pb2_grpc as pb_grpc
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import silence_resource
from tocsin_common.auth.policy import Resource
from tocsin_common.config import ConfigStore
from tocsin_common.limits import active_silences_problem, silence_problems
from tocsin_common.maintenance import is_maintenance
from tocsin_common.redisclient import redis_client
from tocsin_common.statuspage.updates import UpdateError, clean_public_title
from tocsin_common.timeutil import set_timestamp
from tocsin_common.transport import RedisConnection

from tocsin_correlation.matchers import MatcherError
from tocsin_correlation.silences import (
    Silence,
    count_active,
    matchers_from_proto,
    silence_from_proto,
)

SILENCES_KEY = "tocsin:silences"


async def load_silences(redis: Redis) -> list[Silence]:
    """Every stored silence (the worker's snapshot refresh reads the same hash)."""
    out = []
    for raw in (await redis.hgetall(SILENCES_KEY)).values():
        message = pb.Silence()
        message.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        try:
            out.append(silence_from_proto(message))
        except MatcherError:
            continue  # validated when created; never let one bad entry hide the others
    return out


async def purge_silences(redis: Redis, silence_ids: list[str]) -> None:
    """Delete these silences (those past ``limits.silence_retention``)."""
    if silence_ids:
        await redis.hdel(SILENCES_KEY, *silence_ids)


class SilenceServicer(pb_grpc.SilenceServiceServicer):
    def __init__(
        self,
        redis: RedisConnection,
        config: ConfigStore,
        access: AccessControl,
        clock: Callable[[], float] = time.time,
    ):
        self._redis_connection = redis
        self._redis: Redis | None = None
        self._config = config
        self._access = access
        self._clock = clock

    def _client(self) -> Redis:
        if self._redis is None:  # created on the gRPC thread's loop, which serves every call
            self._redis = redis_client(self._redis_connection)
        return self._redis

    async def CreateSilence(
        self, request: pb.CreateSilenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSilenceResponse:
        given = request.silence
        now = self._clock()
        limits = self._config.current.limits
        problems = []
        try:
            matchers = matchers_from_proto(given.matchers, limits)
        except MatcherError as error:
            problems.append(str(error))
            matchers = ()
        problems += silence_problems(
            limits,
            matchers,
            comment=given.comment,
            silence_id=given.silence_id,
            created_by=given.created_by,
        )
        starts = given.starts_at.ToNanoseconds() / 1e9 if given.HasField("starts_at") else now
        if not given.HasField("ends_at"):
            problems.append("ends_at: required")
        ends = given.ends_at.ToNanoseconds() / 1e9
        if given.HasField("ends_at") and ends <= starts:
            problems.append("ends_at: must be after starts_at")
        if given.HasField("ends_at") and ends <= now:
            problems.append("ends_at: must be in the future")
        if given.service_id:
            try:
                self._config.current.service(given.service_id)
            except KeyError:
                problems.append(f"service_id: unknown service {given.service_id!r}")
        public_title = ""
        if given.public_title:
            if not is_maintenance(given):
                problems.append("public_title: only a maintenance window has a public title")
            else:
                try:
                    public_title = clean_public_title(given.public_title).text
                except UpdateError as error:
                    problems.append(str(error))
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        silence_id = given.silence_id or str(uuid.uuid4())
        principal = await self._access.authorize(
            context,
            "silence.create",
            silence_resource(self._config.current, silence_id, given.service_id),
        )
        stored = await load_silences(self._client())
        active = count_active(stored, given.service_id, now, excluding=given.silence_id)
        if full := active_silences_problem(limits, given.service_id, active):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, full)
        silence = Silence(
            silence_id=silence_id,
            service_id=given.service_id,
            matchers=matchers,
            starts_at=starts,
            ends_at=ends,
            created_by=principal.id,  # never a field the client fills in
            comment=given.comment,
            public_title=public_title,
        )
        await self._client().hset(
            SILENCES_KEY, silence.silence_id, silence.to_proto().SerializeToString()
        )
        return pb.CreateSilenceResponse(silence_id=silence.silence_id)

    async def ListSilences(
        self, request: pb.ListSilencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSilencesResponse:
        now = self._clock()
        config = self._config.current
        found = [
            s
            for s in await load_silences(self._client())
            if (request.include_expired or s.ends_at > now)
            and (not request.service_id or s.service_id in ("", request.service_id))
            and self._access.allows(
                "silence.read", silence_resource(config, s.silence_id, s.service_id)
            )
        ]
        found.sort(key=lambda s: (s.starts_at, s.silence_id))
        return pb.ListSilencesResponse(silences=[s.to_proto() for s in found])

    async def StatusMaintenance(
        self, request: pb.StatusMaintenanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusMaintenanceResponse:
        """The runtime maintenance windows not over yet, for the public status page: only
        their service, times and public title (never the comment or who made them)."""
        await self._access.authorize(context, "status_page.read", Resource("status_page"))
        now = self._clock()
        reply = pb.StatusMaintenanceResponse()
        stored = sorted(
            await load_silences(self._client()), key=lambda s: (s.starts_at, s.silence_id)
        )
        for silence in stored:
            message = silence.to_proto()
            if silence.ends_at <= now or not is_maintenance(message):
                continue
            reply.windows.add(
                window_id=silence.silence_id,
                service_id=silence.service_id,
                starts_at=message.starts_at,
                ends_at=message.ends_at,
                public_title=silence.public_title,
            )
        return reply

    async def ExpireSilence(
        self, request: pb.ExpireSilenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExpireSilenceResponse:
        raw = await self._client().hget(SILENCES_KEY, request.silence_id)
        if raw is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"silence_id: no silence {request.silence_id!r}"
            )
            raise AssertionError("unreachable: abort raises")
        message = pb.Silence()
        message.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
        await self._access.authorize(
            context,
            "silence.expire",
            silence_resource(self._config.current, message.silence_id, message.service_id),
        )
        now = datetime.fromtimestamp(self._clock(), UTC)
        if message.ends_at.ToDatetime(tzinfo=UTC) > now:
            set_timestamp(message.ends_at, now)
            if message.starts_at.ToDatetime(tzinfo=UTC) > now:
                set_timestamp(message.starts_at, now)
            await self._client().hset(SILENCES_KEY, request.silence_id, message.SerializeToString())
        return pb.ExpireSilenceResponse()


def registrar(
    redis: RedisConnection, config: ConfigStore, access: AccessControl
) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SilenceServiceServicer_to_server(
            SilenceServicer(redis, config, access), server
        )

    return register
