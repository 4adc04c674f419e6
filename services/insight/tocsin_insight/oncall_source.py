"""Who is on call for a service now, for the deploy gate: escalation's
``OnCallService.WhoIsOnCall`` for the service's escalation policy, asked with insight's own
service credential (policy action ``oncall.read``) and kept for a few seconds per policy.

"On call for the service" is whoever its escalation policy pages first now: the people of
level 1 (a schedule's on-call, a user, a team's members). Their time zone is the config's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from tocsin.v1 import oncall_service_pb2, oncall_service_pb2_grpc
from tocsin_common.change.gate import OnCallPerson
from tocsin_common.config import TocsinConfig

log = logging.getLogger("tocsin.insight.gate")

CACHE_SECONDS = 10.0
CALL_TIMEOUT_S = 2.0

Ask = Callable[[str], Awaitable[oncall_service_pb2.WhoIsOnCallResponse]]


class OnCallUnknown(Exception):
    """escalation could not say (unreachable, or refused): the message says why."""


def people_of(
    config: TocsinConfig, response: oncall_service_pb2.WhoIsOnCallResponse
) -> tuple[OnCallPerson, ...]:
    """The level-1 people of a policy's ``WhoIsOnCall`` answer, once each, sorted, with
    their configured time zones (pure)."""
    zones = {u.id: u.time_zone for u in config.users}
    users = sorted({e.user_id for e in response.entries if e.escalation_level == 1})
    return tuple(OnCallPerson(user_id=u, time_zone=zones.get(u, "UTC")) for u in users)


@dataclass
class _Entry:
    response: oncall_service_pb2.WhoIsOnCallResponse
    read_at: float


class OnCallSource:
    """``WhoIsOnCall`` per escalation policy, each answer kept ``ttl`` seconds."""

    def __init__(
        self,
        ask: Ask,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ask = ask
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, _Entry] = {}

    @classmethod
    def over(cls, channel: grpc.aio.Channel, ttl: float = CACHE_SECONDS) -> OnCallSource:
        """Asking escalation over ``channel`` (which carries insight's credential)."""
        stub = oncall_service_pb2_grpc.OnCallServiceStub(channel)

        async def ask(policy_id: str) -> oncall_service_pb2.WhoIsOnCallResponse:
            request = oncall_service_pb2.WhoIsOnCallRequest(escalation_policy_id=policy_id)
            reply: oncall_service_pb2.WhoIsOnCallResponse = await stub.WhoIsOnCall(
                request, timeout=CALL_TIMEOUT_S
            )
            return reply

        return cls(ask, ttl)

    async def on_call(self, config: TocsinConfig, service_id: str) -> tuple[OnCallPerson, ...]:
        """Who is on call for ``service_id`` now; :class:`OnCallUnknown` when escalation
        cannot say."""
        try:
            policy = config.service(service_id).escalation_policy
        except KeyError:
            raise OnCallUnknown(f"service {service_id!r} is not in the configuration") from None
        now = self._clock()
        entry = self._cache.get(policy)
        if entry is None or now - entry.read_at >= self._ttl:
            try:
                response = await self._ask(policy)
            except grpc.aio.AioRpcError as e:
                log.warning("WhoIsOnCall(%s) failed: %s %s", policy, e.code(), e.details())
                raise OnCallUnknown(
                    f"escalation did not say who is on call ({e.code().name}: {e.details()})"
                ) from None
            entry = _Entry(response, now)
            self._cache[policy] = entry
        return people_of(config, entry.response)
