"""Dedup of alert events per (service, dedup key), with PagerDuty's semantics (pure).

An open alert (triggered or acknowledged) absorbs further triggers with the same key
(count and last seen); after it resolves, a new trigger opens a new alert; acknowledge and
resolve for a key with no open alert are dropped (and counted by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AlertStatus(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass
class AlertState:
    """What correlation remembers of one alert (a table value, stored as JSON)."""

    alert_id: str
    incident_id: str
    status: AlertStatus
    count: int
    first_seen: float  # epoch seconds
    last_seen: float
    # Flap detection (flapping.py): the key's recent states (1 trigger, 0 resolve), kept
    # across the alerts of one key, and whether it is flapping now.
    states: list[int] = field(default_factory=list)
    flapping: bool = False

    @property
    def is_open(self) -> bool:
        return self.status is not AlertStatus.RESOLVED

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status.value, "states": list(self.states)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertState:
        return cls(
            **{
                **data,
                "status": AlertStatus(data["status"]),
                "states": list(data.get("states", [])),
            }
        )


def alert_key(service_id: str, dedup_key: str) -> str:
    return f"{service_id}\x1f{dedup_key}"


class Decision(StrEnum):
    NEW = "new"  # a new alert: find or open its incident
    DUPLICATE = "duplicate"  # a repeat of an open alert
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    DROP = "drop"  # ack/resolve of an unknown or resolved key, ack of an ack


def decide(existing: AlertState | None, action: str) -> Decision:
    """What an event with `action` (trigger|acknowledge|resolve) does to the alert."""
    open_alert = existing is not None and existing.is_open
    if action == "trigger":
        return Decision.DUPLICATE if open_alert else Decision.NEW
    if not open_alert:
        return Decision.DROP
    assert existing is not None
    if action == "acknowledge":
        if existing.status is AlertStatus.ACKNOWLEDGED:
            return Decision.DROP
        return Decision.ACKNOWLEDGE
    if action == "resolve":
        return Decision.RESOLVE
    return Decision.DROP
