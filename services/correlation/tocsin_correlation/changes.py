"""Change correlation (pure): recent changes on a service and its upstreams, ranked.

Changes are kept per service (a faust table keyed by service id, and a Redis index other
partitions read) for a retention period; a new incident lists those within its service's
``change_lookback`` before it opened as probable causes: changes on the same service
first, then on upstream services nearest first, each group most recent first.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tocsin.v1 import alert_pb2, incident_pb2

MAX_PER_SERVICE = 200  # newest kept per service, whatever the retention
MAX_CAUSES = 10
# The changes an incident copies, all together, at most this many bytes: ingest accepts a
# change of up to half a megabyte, and ten of those copied into one incident event would
# make it bigger than a Kafka record may be (it would be dead-lettered, and its alert with
# it). A cause that does not fit whole is copied without its details (what changed, when,
# where, links); one that does not fit even so is left out, and so are those ranked after.
MAX_CAUSES_BYTES = 32 * 1024


@dataclass(frozen=True)
class ChangeRecord:
    event_id: str
    service_id: str
    at: float  # when the change happened (source timestamp, else received)
    raw: bytes  # the ChangeEvent, serialized

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "service_id": self.service_id,
            "at": self.at,
            "raw": base64.b64encode(self.raw).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeRecord:
        return cls(data["event_id"], data["service_id"], data["at"], base64.b64decode(data["raw"]))

    @classmethod
    def from_event(cls, change: alert_pb2.ChangeEvent, received: float) -> ChangeRecord:
        at = change.timestamp.ToNanoseconds() / 1e9 if change.HasField("timestamp") else 0.0
        if at <= 0 and change.HasField("received_time"):
            at = change.received_time.ToNanoseconds() / 1e9
        return cls(change.event_id, change.service_id, at or received, change.SerializeToString())

    def event(self) -> alert_pb2.ChangeEvent:
        change = alert_pb2.ChangeEvent()
        change.ParseFromString(self.raw)
        return change


def add_change(
    kept: Sequence[dict[str, Any]], record: ChangeRecord, now: float, retention: float
) -> list[dict[str, Any]]:
    """The kept list with ``record`` added (once), expired ones dropped, newest last."""
    items = [c for c in kept if c["event_id"] != record.event_id and c["at"] >= now - retention]
    items.append(record.to_json())
    items.sort(key=lambda c: c["at"])
    return items[-MAX_PER_SERVICE:]


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s before"
    if seconds < 5400:
        return f"{round(seconds / 60)} min before"
    return f"{seconds / 3600:.1f} h before"


def probable_causes(
    service_id: str,
    upstream: Sequence[str],
    changes: Iterable[ChangeRecord],
    opened_at: float,
    lookback: float,
) -> list[incident_pb2.ProbableCause]:
    """Changes on the service or its upstreams within ``lookback`` before ``opened_at``
    (a minute of clock skew after it is tolerated), ranked."""
    order = {service_id: 0, **{s: i + 1 for i, s in enumerate(upstream)}}
    seen: set[str] = set()
    candidates: list[ChangeRecord] = []
    for change in changes:
        if change.service_id not in order or change.event_id in seen:
            continue
        if opened_at - lookback <= change.at <= opened_at + 60:
            seen.add(change.event_id)
            candidates.append(change)
    candidates.sort(key=lambda c: (order[c.service_id], -c.at))
    causes = []
    budget = MAX_CAUSES_BYTES
    for rank, change in enumerate(candidates[:MAX_CAUSES], start=1):
        where = (
            "same service" if change.service_id == service_id else f"upstream {change.service_id}"
        )
        ago = max(0.0, opened_at - change.at)
        cause = incident_pb2.ProbableCause(
            change=change.event(), rank=rank, reason=f"{where}, {_ago(ago)}"
        )
        if cause.ByteSize() > budget:
            cause.change.ClearField("details")
            cause.reason += "; details left out (too big to copy)"
        if cause.ByteSize() > budget:
            break
        budget -= cause.ByteSize()
        causes.append(cause)
    return causes
