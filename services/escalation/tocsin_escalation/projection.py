"""The read side of incidents in Redis, built from incidents.events.

- tocsin:incident:<id>           the latest Incident (protobuf bytes)
- tocsin:incident:<id>:timeline  every IncidentEvent of it, in order (protobuf bytes), and
                                 the entries other services add (tocsin_common.timeline)
- tocsin:incident:<id>:parked    such entries that came before the incident's first event
- tocsin:incidents               incident ids by creation time (sorted set, score: seconds)
- tocsin:incidents:by-status:<triggered|acknowledged|resolved>,
  tocsin:incidents:by-service:<service id>, tocsin:incidents:by-urgency:<high|low>
                                 the same, per value: List's indexes (incident_query.py)
- tocsin:incidents:expiring      resolved incidents by when their keys expire
- tocsin:incident-event-seen:<event id>  marks an applied event (replays apply once)
- tocsin:incident-stream         every applied event (a stream, capped): Watch's source;
                                 an entry's id is its Watch position
- tocsin:incidents:status-updated  incidents with a public status update, by the time of
                                 their latest (sorted set): the status page's source

Everything an event changes is written by one script queued on escalation's batch
pipeline (one round trip per batch). Entries that change no state (escalation's levels
reached, pages' outcomes) are appended by :func:`tocsin_common.timeline.queue_append`,
from escalation here and from notification. A resolved incident's keys expire after
``limits.resolved_incident_retention``; its index entries are pruned once per batch and
before each List (the history belongs to the insight store).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from tocsin.v1 import incident_pb2
from tocsin_common import timeline
from tocsin_common.config import Limits

from tocsin_escalation.incident_query import (
    ALL_KEY,
    EXPIRING_KEY,
    KEY_PREFIX,
    STATUSES,
    URGENCIES,
    Cursor,
    Plan,
    expiring_member,
    missed_events,
    service_key,
    status_key,
    urgency_key,
)
from tocsin_escalation.pipelining import queue_script

_SEEN_TTL = timeline.SEEN_TTL_S
STREAM_KEY = timeline.STREAM_KEY
STATUS_UPDATED_KEY = "tocsin:incidents:status-updated"
STATUS_UPDATED_KEEP_S = 30 * 24 * 3600  # the page shows 7 days of resolved incidents
_INCIDENT_PREFIX = timeline.INCIDENT_PREFIX
_STATUS_KEYS = [status_key(s) for s in STATUSES]
_URGENCY_KEYS = [urgency_key(u) for u in URGENCIES]
PRUNE_BATCH = 500  # index entries of expired incidents removed per prune

# Applies one event unless it was applied before: the seen mark and the writes it guards
# in one atomic step, so it can be queued on a pipeline with many others (one round trip).
# KEYS: seen, incident, timeline, all, by-service, by-status, by-urgency, expiring, stream,
# parked, then the status and urgency sets the incident must leave. Entries parked because
# they came before the incident (tocsin_common.timeline) follow the event, carrying it.
_APPLY = (
    timeline.WITH_INCIDENT_LUA
    + """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
for i = 4, 7 do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5]) end
for i = 11, #KEYS do redis.call('ZREM', KEYS[i], ARGV[5]) end
if ARGV[6] == '1' then
  local ttl = tonumber(ARGV[7])
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  local now = redis.call('TIME')
  redis.call('ZADD', KEYS[8], tonumber(now[1]) + ttl, ARGV[9])
else
  redis.call('PERSIST', KEYS[3])
  redis.call('ZREM', KEYS[8], ARGV[9])
end
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[8], '*', 'e', ARGV[3], 's', ARGV[10])
local parked = redis.call('LRANGE', KEYS[10], 0, -1)
if #parked > 0 then
  for _, raw in ipairs(parked) do
    local entry = with_incident(raw, ARGV[2])
    redis.call('RPUSH', KEYS[3], entry)
    redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[8], '*', 'e', entry, 's', ARGV[10])
  end
  redis.call('DEL', KEYS[10])
end
return 1
"""
)

# Removes expired incidents from every index. KEYS: expiring, all; ARGV: how many at most,
# the by-service key prefix, then every status and urgency set.
_PRUNE = """
local now = redis.call('TIME')[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
for _, member in ipairs(due) do
  local tab = string.find(member, '\\t', 1, true)
  local id = string.sub(member, 1, tab - 1)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', ARGV[2] .. string.sub(member, tab + 1), id)
  for i = 3, #ARGV do redis.call('ZREM', ARGV[i], id) end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# One page of a List. KEYS: a scratch key (deleted before returning), the stream, every
# incident. ARGV: min score, max score, cursor score ('' for the first page), cursor id,
# page size, incident key prefix, the number of groups, then each group: its size, keys.
# The result is the intersection of the groups (each the union of its sets), walked newest
# first (score desc, id desc), after the cursor; ids whose incident expired are skipped.
# Answers {incidents, last score, last id, more (0/1), the stream's last position}.
_QUERY = """
local function call(args) return redis.call(unpack(args)) end
local function before(a, b)
  local n = math.min(#a, #b)
  for k = 1, n do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local scratch, made, inter = KEYS[1], {}, {}
local i = 8
for g = 1, tonumber(ARGV[7]) do
  local n = tonumber(ARGV[i])
  if n == 1 then
    inter[g] = ARGV[i + 1]
  else
    local key = scratch .. ':' .. g
    local args = {'ZUNIONSTORE', key, n}
    for k = 1, n do args[#args + 1] = ARGV[i + k] end
    args[#args + 1] = 'AGGREGATE'; args[#args + 1] = 'MAX'
    call(args)
    made[#made + 1] = key
    inter[g] = key
  end
  i = i + n + 1
end
local source = KEYS[3]
if #inter == 1 then
  source = inter[1]
elseif #inter > 1 then
  local args = {'ZINTERSTORE', scratch, #inter}
  for _, key in ipairs(inter) do args[#args + 1] = key end
  args[#args + 1] = 'AGGREGATE'; args[#args + 1] = 'MAX'
  call(args)
  made[#made + 1] = scratch
  source = scratch
end
local limit = tonumber(ARGV[5])
local out, found, more, last_score, last_id = {}, 0, 0, '', ''
local function visit(id, score)
  local raw = redis.call('GET', ARGV[6] .. id)
  if not raw then return false end
  if found == limit then more = 1; return true end
  found = found + 1
  out[found] = raw
  last_score, last_id = score, id
  return false
end
local done, upper = false, ARGV[2]
if ARGV[3] ~= '' then
  local ties = redis.call('ZREVRANGEBYSCORE', source, ARGV[3], ARGV[3])
  for _, id in ipairs(ties) do
    if before(id, ARGV[4]) and visit(id, ARGV[3]) then done = true; break end
  end
  upper = '(' .. ARGV[3]
end
local offset = 0
while not done do
  local batch = redis.call(
    'ZREVRANGEBYSCORE', source, upper, ARGV[1], 'WITHSCORES', 'LIMIT', offset, 100)
  if #batch == 0 then break end
  for j = 1, #batch, 2 do
    if visit(batch[j], batch[j + 1]) then done = true; break end
  end
  offset = offset + 100
end
for _, key in ipairs(made) do redis.call('DEL', key) end
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local position = '0-0'
if #newest > 0 then position = newest[1][1] end
return {out, last_score, last_id, more, position}
"""


_seen_key = timeline.seen_key


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True)
class Page:
    incidents: list[incident_pb2.Incident]
    next_cursor: Cursor | None  # None: the last page
    watch_position: str


@dataclass(frozen=True)
class Retention:
    """How long a resolved incident stays, and how many events Watch can resume over."""

    resolved_seconds: int = 7 * 24 * 3600
    watch_backlog: int = 100_000


def retention_of(limits: Limits) -> Retention:
    return Retention(
        resolved_seconds=max(1, int(limits.resolved_incident_retention.total_seconds())),
        watch_backlog=limits.watch_backlog,
    )


class PositionLost(Exception):
    """The stream no longer holds every event after the position asked to resume from."""


class IncidentProjection:
    def __init__(self, redis: Redis, retention: Callable[[], Retention] = Retention) -> None:
        self._redis = redis
        self._retention = retention
        self._apply = redis.register_script(_APPLY)
        self._prune = redis.register_script(_PRUNE)
        self._query = redis.register_script(_QUERY)

    @staticmethod
    def queue_seen(pipe: Pipeline, event_id: str) -> None:
        """Queue "was this event applied before?" on a pipeline; its result is 0 or 1."""
        pipe.exists(_seen_key(event_id))

    def queue_apply(self, pipe: Pipeline, event: incident_pb2.IncidentEvent) -> None:
        """Queue the event's application on a pipeline: recorded unless it was applied
        before (a redelivery); its result there is 1, or 0 for a redelivery."""
        incident = event.incident
        key = f"{_INCIDENT_PREFIX}{incident.incident_id}"
        raw_event = event.SerializeToString()
        current_status = status_key(incident.status)
        current_urgency = urgency_key(incident.urgency)
        retention = self._retention()
        queue_script(
            pipe,
            self._apply,
            [
                _seen_key(event.event_id),
                key,
                f"{key}:timeline",
                ALL_KEY,
                service_key(incident.service_id),
                current_status,
                current_urgency,
                EXPIRING_KEY,
                STREAM_KEY,
                timeline.parked_key(incident.incident_id),
                *(k for k in _STATUS_KEYS if k != current_status),
                *(k for k in _URGENCY_KEYS if k != current_urgency),
            ],
            [
                _SEEN_TTL,
                incident.SerializeToString(),
                raw_event,
                repr(incident.created_at.ToNanoseconds() / 1e9),
                incident.incident_id,
                "1" if incident.status == incident_pb2.INCIDENT_STATUS_RESOLVED else "0",
                max(1, retention.resolved_seconds),
                retention.watch_backlog,
                expiring_member(incident.incident_id, incident.service_id),
                incident.service_id,
            ],
        )

        if event.type == incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED:
            pipe.zadd(STATUS_UPDATED_KEY, {incident.incident_id: event.at.ToNanoseconds() / 1e9})

    async def status_updated_since(self, since_s: float, limit: int) -> list[str]:
        """Incidents whose latest status update is at or after ``since_s``, newest first
        (entries older than a month are dropped on the way)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(STATUS_UPDATED_KEY, "-inf", since_s - STATUS_UPDATED_KEEP_S)
            pipe.zrevrangebyscore(STATUS_UPDATED_KEY, "+inf", since_s, start=0, num=limit)
            _, found = await pipe.execute()
        return [_text(i) for i in found]

    def queue_append(
        self, pipe: Pipeline, entry: incident_pb2.IncidentEvent, incident_id: str, service_id: str
    ) -> None:
        """Queue the append of an entry that changes no state (its incident is the
        projection's at that moment): tocsin_common.timeline.queue_append."""
        timeline.queue_append(pipe, entry, incident_id, service_id, self._retention().watch_backlog)

    def queue_prune(self, pipe: Pipeline) -> None:
        """Queue the removal of expired incidents from the indexes (a bounded number)."""
        queue_script(
            pipe,
            self._prune,
            [EXPIRING_KEY, ALL_KEY],
            [PRUNE_BATCH, f"{KEY_PREFIX}:by-service:", *_STATUS_KEYS, *_URGENCY_KEYS],
        )

    async def get(self, incident_id: str) -> incident_pb2.Incident | None:
        raw = await self._redis.get(f"{_INCIDENT_PREFIX}{incident_id}")
        if raw is None:
            return None
        incident = incident_pb2.Incident()
        incident.ParseFromString(_bytes(raw))
        return incident

    async def timeline(self, incident_id: str) -> list[incident_pb2.IncidentEvent]:
        events = []
        for raw in await self._redis.lrange(f"{_INCIDENT_PREFIX}{incident_id}:timeline", 0, -1):
            event = incident_pb2.IncidentEvent()
            event.ParseFromString(_bytes(raw))
            events.append(event)
        return events

    async def page(self, plan: Plan, limit: int, after: Cursor | None) -> Page:
        """One page of the incidents ``plan`` selects, newest first, after ``after``."""
        args: list[Any] = [
            plan.min_score,
            plan.max_score,
            after.score if after else "",
            after.incident_id if after else "",
            limit,
            _INCIDENT_PREFIX,
            len(plan.groups),
        ]
        for group in plan.groups:
            args += [len(group), *group]
        async with self._redis.pipeline(transaction=True) as pipe:
            self.queue_prune(pipe)
            queue_script(pipe, self._query, [f"{KEY_PREFIX}:scratch", STREAM_KEY, ALL_KEY], args)
            _, (found, last_score, last_id, more, position) = await pipe.execute()
        incidents = []
        for raw in found:
            incident = incident_pb2.Incident()
            incident.ParseFromString(_bytes(raw))
            incidents.append(incident)
        cursor = Cursor(_text(last_score), _text(last_id)) if int(more) else None
        return Page(incidents, cursor, _text(position))

    async def position(self) -> str:
        """The stream's newest position ("0-0" before the first event)."""
        newest: Any = await self._redis.xrevrange(STREAM_KEY, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def _check_kept(self, position: str) -> None:
        try:
            info: Any = await self._redis.xinfo_stream(STREAM_KEY)
        except Exception as e:  # no stream yet: nothing was ever trimmed
            if "no such key" in str(e).lower():
                return
            raise

        def field(name: str) -> Any:
            return info.get(name, info.get(name.encode()))

        first = field("first-entry")
        last = field("last-generated-id")
        if missed_events(
            position,
            _text(first[0]) if first else None,
            _text(last) if last is not None else None,
            trimmed=int(field("entries-added") or 0) > int(field("length") or 0),
        ):
            raise PositionLost(position)

    async def watch(
        self, after: str | None, block_ms: int = 2000, count: int = 200
    ) -> AsyncIterator[tuple[str, incident_pb2.IncidentEvent]]:
        """Every event applied after position ``after`` (None: from now), by any replica,
        with its position; raises PositionLost when the stream dropped some of them."""
        last = after if after is not None else await self.position()
        await self._check_kept(last)
        while True:
            read: Any = await self._redis.xread({STREAM_KEY: last}, count=count, block=block_ms)
            if not read:
                continue
            entries = read[0][1]  # [[stream, entries]] (RESP2)
            for entry_id, fields in entries:
                last = _text(entry_id)
                event = incident_pb2.IncidentEvent()
                event.ParseFromString(_bytes(fields.get(b"e", fields.get("e", b""))))
                yield last, event
            if len(entries) == count:  # behind: make sure nothing was trimmed under us
                await self._check_kept(last)
