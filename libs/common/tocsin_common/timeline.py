"""An incident's timeline in Redis, and how a service adds an entry that changes no state.

The read side of incidents (escalation's projection, `tocsin_escalation/projection.py`)
keeps, per incident:

- ``tocsin:incident:<id>``           the latest Incident (protobuf bytes)
- ``tocsin:incident:<id>:timeline``  its entries, in order (IncidentEvent bytes, each
                                     carrying the incident as it was once applied)
- ``tocsin:incident:<id>:parked``    entries that came before the projection held the
                                     incident: written right after its next event
- ``tocsin:incident-event-seen:<event id>``  marks an applied entry (replays apply once)
- ``tocsin:incident-stream``         every applied entry (capped): Watch's source

Correlation's events (incidents.events) change the incident and reach the timeline through
the projection. Entries that change nothing — a level escalation reached, a page's outcome
— are written here by the service that decided them (escalation, notification), once their
record is on Kafka (`incidents.timeline`, `notifications.status`): they no longer loop
through incidents.commands and correlation to come back as events.

An entry is appended without its incident; :data:`APPEND` adds the incident as the
projection holds it at that moment, by protobuf concatenation (a message's bytes followed
by one more field's bytes parse as the message with that field set: the wire format merges
them), so it carries the state it left, as correlation's events do, without a read round
trip — and a timer's entry never carries a state older than the projection's.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tocsin.v1 import incident_pb2, notification_pb2

from tocsin_common.timeutil import set_timestamp

INCIDENT_PREFIX = "tocsin:incident:"
STREAM_KEY = "tocsin:incident-stream"
SEEN_TTL_S = 7 * 24 * 3600
DEFAULT_WATCH_BACKLOG = 100_000

_NAMESPACE = uuid.UUID("5b0e7d52-86a3-4c1e-b7f4-0f2d9c6a1e37")


def incident_key(incident_id: str) -> str:
    return f"{INCIDENT_PREFIX}{incident_id}"


def timeline_key(incident_id: str) -> str:
    return f"{INCIDENT_PREFIX}{incident_id}:timeline"


def parked_key(incident_id: str) -> str:
    return f"{INCIDENT_PREFIX}{incident_id}:parked"


def seen_key(event_id: str) -> str:
    return f"tocsin:incident-event-seen:{event_id}"


# Lua: `entry` followed by field 3 (incident, length-delimited: tag 0x1A, varint length).
WITH_INCIDENT_LUA = """
local function with_incident(entry, incident)
  local n, len = #incident, {}
  repeat
    local byte = n % 128
    n = (n - byte) / 128
    if n > 0 then byte = byte + 128 end
    len[#len + 1] = string.char(byte)
  until n == 0
  return entry .. string.char(26) .. table.concat(len) .. incident
end
"""

# Appends one entry unless it was applied before. KEYS: seen, incident, timeline, parked,
# stream. ARGV: seen TTL, the entry (no incident), its service id, the stream's length.
# Answers 1 (appended), 2 (parked: the projection does not hold the incident yet) or 0.
APPEND = (
    WITH_INCIDENT_LUA
    + """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
local incident = redis.call('GET', KEYS[2])
if not incident then
  redis.call('RPUSH', KEYS[4], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[1])
  return 2
end
local entry = with_incident(ARGV[2], incident)
redis.call('RPUSH', KEYS[3], entry)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'e', entry, 's', ARGV[3])
return 1
"""
)


def entry_id(*parts: str) -> str:
    """A timeline entry's id derived from what made it: the same on a replay."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def bare(entry: incident_pb2.IncidentEvent) -> bytes:
    """The entry's bytes without its incident (the append adds the projection's)."""
    if not entry.HasField("incident"):
        return entry.SerializeToString()
    copy = incident_pb2.IncidentEvent()
    copy.CopyFrom(entry)
    copy.ClearField("incident")
    return copy.SerializeToString()


def queue_append(
    pipe: Any,
    entry: incident_pb2.IncidentEvent,
    incident_id: str,
    service_id: str,
    watch_backlog: int = DEFAULT_WATCH_BACKLOG,
) -> None:
    """Queue the append of ``entry`` to incident ``incident_id``'s timeline on a Redis
    pipeline (its result there: 1 appended, 2 parked, 0 applied before)."""
    if not entry.event_id:
        raise ValueError("entry.event_id: missing (it keeps a replayed entry from repeating)")
    if not incident_id:
        raise ValueError("incident_id: missing")
    pipe.eval(
        APPEND,
        5,
        seen_key(entry.event_id),
        incident_key(incident_id),
        timeline_key(incident_id),
        parked_key(incident_id),
        STREAM_KEY,
        SEEN_TTL_S,
        bare(entry),
        service_id,
        max(1, watch_backlog),
    )


def approval_expired_entry(
    key: str, rule_id: str, what: str, expires_at: datetime
) -> incident_pb2.IncidentEvent:
    """The timeline entry of an automation action whose approval expired undecided, by
    ``automation:<rule>`` at its expiry. Its id derives from the firing's key: a sweep
    repeated after a restart (or by two processes) appends it once."""
    entry = incident_pb2.IncidentEvent(
        event_id=entry_id("approval-expired", key),
        type=incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED,
        actor=f"automation:{rule_id}",
        message=(
            f"Automation {what}: its approval expired at "
            f"{expires_at.isoformat(timespec='seconds')} without a decision; it will not run"
        ),
    )
    set_timestamp(entry.at, expires_at)
    return entry


# What a page's outcome says on the timeline; outcomes not listed (a duplicate) say nothing.
_OUTCOME_WORDS = {
    notification_pb2.DELIVERY_OUTCOME_DELIVERED: "Notified",
    notification_pb2.DELIVERY_OUTCOME_RETRYING: "Notification attempt failed for",
    notification_pb2.DELIVERY_OUTCOME_FAILED: "Could not notify",
    notification_pb2.DELIVERY_OUTCOME_RATE_LIMITED: "Notification delayed (rate limit) for",
}


def notified_entry(
    status: notification_pb2.NotificationStatus, who: str = ""
) -> incident_pb2.IncidentEvent | None:
    """The timeline entry of a page's outcome (``who``: the person's name), or None for an
    outcome the timeline does not show. Its id derives from the request, the attempt and
    the outcome, as insight keys the outcome's fact: a replayed status is applied once."""
    words = _OUTCOME_WORDS.get(status.outcome)
    if words is None:
        return None
    how = f" by {status.channel}" if status.channel else ""
    tail = f" (attempt {status.attempt}): {status.detail}" if status.detail else ""
    entry = incident_pb2.IncidentEvent(
        event_id=entry_id(
            "notified", status.request_id, str(status.attempt), str(int(status.outcome))
        ),
        type=incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED,
        actor="notification",
        message=f"{words} {who or status.user_id}{how}{tail}",
    )
    entry.at.CopyFrom(status.at)
    return entry
