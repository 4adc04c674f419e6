"""Automation actions waiting for a person's approval, in Redis (docs/automation.md).

One record per firing (its idempotency key): the approval's state (pure state machine in
tocsin_common.automation.approval) and the request to run once it is approved. A set per
incident lists its firings, so a decision names only the incident and the rule. A decision
is a compare-and-set (WATCH): two people deciding at once get one decision and one
conflict. A sorted set of the waiting firings by expiry feeds the expiry sweep, which marks
an approval nobody decided in time as expired and writes its timeline entry once.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Literal

from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from redis.exceptions import WatchError
from tocsin.v1 import notification_pb2
from tocsin_common import timeline
from tocsin_common.automation import approval as approvals
from tocsin_common.automation.approval import Approval, ApprovalConflict

TTL_S = 30 * 24 * 3600
log = logging.getLogger("tocsin.notification.approvals")


def _record_key(key: str) -> str:
    return f"tocsin:automation:approval:{key}"


def _index_key(incident_id: str) -> str:
    return f"tocsin:automation:approvals:{incident_id}"


# Every firing that waits, scored by its expiry (unix seconds): what the expiry sweep reads.
EXPIRING_KEY = "tocsin:automation:approvals:expiring"


def encode(approval: Approval, request: notification_pb2.NotificationRequest) -> bytes:
    fields: dict[str, Any] = asdict(approval)
    for name in ("requested_at", "expires_at", "decided_at"):
        value = fields[name]
        fields[name] = value.isoformat() if value is not None else None
    fields["trigger"] = request.automation.trigger
    fields["request"] = base64.b64encode(request.SerializeToString()).decode()
    return json.dumps(fields, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> tuple[Approval, notification_pb2.NotificationRequest]:
    fields = json.loads(raw)
    request = notification_pb2.NotificationRequest()
    request.ParseFromString(base64.b64decode(fields.pop("request")))
    fields.pop("trigger", None)
    for name in ("requested_at", "expires_at", "decided_at"):
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    return Approval(**fields), request


class ApprovalStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def open(
        self, request: notification_pb2.NotificationRequest, now: datetime
    ) -> Approval | None:
        """A new pending approval for the request's firing; None when the firing has one
        already (a redelivery or a replay: nothing to ask again)."""
        action = request.automation
        pending = approvals.request(
            request.idempotency_key,
            action.rule_id,
            request.incident.incident_id,
            now,
            timedelta(milliseconds=action.approval_ttl_ms or 3_600_000),
        )
        created = await self._redis.set(
            _record_key(pending.key), encode(pending, request), nx=True, ex=TTL_S
        )
        index = _index_key(pending.incident_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(index, pending.key)
            pipe.expire(index, TTL_S)
            if created:
                pipe.zadd(EXPIRING_KEY, {pending.key: pending.expires_at.timestamp()})
            await pipe.execute()
        return pending if created else None

    async def get(self, key: str) -> tuple[Approval, notification_pb2.NotificationRequest] | None:
        raw = await self._redis.get(_record_key(key))
        return None if raw is None else decode(raw)

    async def of_incident(self, incident_id: str, now: datetime) -> list[Approval]:
        """Every firing of the incident that waited for approval, as of ``now``, oldest
        first."""
        found = []
        for key in await self._redis.smembers(_index_key(incident_id)):
            stored = await self.get(key.decode() if isinstance(key, bytes) else key)
            if stored is not None:
                found.append(approvals.current(stored[0], now))
        return sorted(found, key=lambda a: (a.requested_at, a.key))

    async def of_rule(
        self, incident_id: str, rule_id: str, now: datetime
    ) -> list[tuple[Approval, notification_pb2.NotificationRequest]]:
        """The rule's firings on the incident, as of ``now`` (oldest first)."""
        found = []
        for key in sorted(await self._redis.smembers(_index_key(incident_id))):
            stored = await self.get(key.decode() if isinstance(key, bytes) else key)
            if stored is not None and stored[0].rule_id == rule_id:
                found.append((approvals.current(stored[0], now), stored[1]))
        return sorted(found, key=lambda pair: pair[0].requested_at)

    async def decide(
        self,
        incident_id: str,
        rule_id: str,
        verdict: Literal["approve", "reject"],
        actor: str,
        now: datetime,
        reason: str = "",
    ) -> list[tuple[Approval, notification_pb2.NotificationRequest]]:
        """Decide every pending firing of the rule on the incident. ApprovalConflict when
        none is pending (naming what the latest is), LookupError when there is none."""
        firings = await self.of_rule(incident_id, rule_id, now)
        if not firings:
            raise LookupError(f"no automation action of rule {rule_id!r} on incident {incident_id}")
        decided = []
        conflict: ApprovalConflict | None = None
        for approval, _ in firings:
            try:
                decided.append(await self._decide_one(approval.key, verdict, actor, now, reason))
            except ApprovalConflict as e:
                conflict = e
        if not decided:
            assert conflict is not None
            raise conflict
        return decided

    async def _decide_one(
        self,
        key: str,
        verdict: Literal["approve", "reject"],
        actor: str,
        now: datetime,
        reason: str,
    ) -> tuple[Approval, notification_pb2.NotificationRequest]:
        record = _record_key(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(record)
                    raw = await pipe.get(record)
                    if raw is None:
                        raise LookupError(f"approval {key} is gone")
                    approval, request = decode(raw)
                    after = approvals.decide(approval, verdict, actor, now, reason)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(record, encode(after, request), ex=TTL_S)
                    await pipe.execute()
                    return after, request
                except WatchError:
                    continue  # decided meanwhile: read it again (then it is a conflict)


    async def expire_due(
        self,
        now: datetime,
        describe: Callable[[notification_pb2.AutomationAction], str],
        limit: int = 100,
    ) -> list[Approval]:
        """Mark the firings whose approval expired undecided as expired, each with a
        timeline entry by its rule (appended once: its id derives from the key, so a sweep
        repeated after a crash between the entry and the list's update adds none); drop
        decided ones from the list. Returns the ones expired now."""
        due = await self._redis.zrangebyscore(
            EXPIRING_KEY, "-inf", now.timestamp(), start=0, num=limit
        )
        expired = []
        for raw_key in due:
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            done = await self._expire_one(key, now, describe)
            if done is not None:
                expired.append(done)
        return expired

    async def _expire_one(
        self,
        key: str,
        now: datetime,
        describe: Callable[[notification_pb2.AutomationAction], str],
    ) -> Approval | None:
        record = _record_key(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(record)
                    raw = await pipe.get(record)
                    stored = _decoded(key, raw)
                    step = approvals.sweep_step(stored[0] if stored else None, now)
                    if step == "wait":
                        await pipe.reset()  # type: ignore[no-untyped-call]
                        return None
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if step == "drop" or stored is None:
                        pipe.zrem(EXPIRING_KEY, key)
                        await pipe.execute()
                        return None
                    approval, request = stored
                    after = approvals.current(approval, now)
                    pipe.set(record, encode(after, request), ex=TTL_S)
                    incident = request.incident
                    timeline.queue_append(
                        pipe,
                        timeline.approval_expired_entry(
                            key, after.rule_id, describe(request.automation), after.expires_at
                        ),
                        incident.incident_id,
                        incident.service_id,
                    )
                    pipe.zrem(EXPIRING_KEY, key)
                    await pipe.execute()
                    return after
                except WatchError:
                    continue  # decided meanwhile: look again


def _decoded(
    key: str, raw: bytes | str | None
) -> tuple[Approval, notification_pb2.NotificationRequest] | None:
    """The stored record, or None when there is none or it cannot be read (the sweep then
    drops the firing from its list, logged, rather than fail on it every pass)."""
    if raw is None:
        return None
    try:
        return decode(raw)
    except (ValueError, KeyError, TypeError, DecodeError):
        log.warning("approval %s: its record cannot be read; the expiry sweep drops it", key)
        return None


def approved(
    request: notification_pb2.NotificationRequest, by: str
) -> notification_pb2.NotificationRequest:
    """The request to run, now that ``by`` approved it."""
    copy = notification_pb2.NotificationRequest()
    copy.CopyFrom(request)
    copy.automation.approved_by = by
    return copy


__all__ = ["ApprovalStore", "approved", "decode", "encode"]
