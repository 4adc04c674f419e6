"""Flap detection, Nagios' algorithm (pure).

The last 21 states of an alert (1 = problem: a trigger, 0 = ok: a resolve) are kept. Each
of the 20 transitions between consecutive states that is a change adds a weight growing
linearly from 0.75 (oldest) to 1.25 (newest); the percent state change is the weighted sum
over 20, times 100. An alert starts flapping above the high threshold and stops below the
low one (hysteresis). A shorter history counts as if its oldest state had been seen all
along (Nagios fills the history with the first state), so one recent change is 6.25 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tocsin_common.config.model import Service

HISTORY = 21
LOW_WEIGHT = 0.75
HIGH_WEIGHT = 1.25
# The defaults of a service's `flapping` settings (the values the issue asks for; Nagios'
# own defaults for services differ).
HIGH_THRESHOLD = 50.0
LOW_THRESHOLD = 25.0


def percent_state_change(states: Sequence[int]) -> float:
    """Weighted percent state change of up to the last 21 states (oldest first)."""
    recent = list(states[-HISTORY:])
    if not recent or recent.count(recent[0]) == len(recent):
        return 0.0  # no change to weigh (a new alert's history, one state)
    padded = [recent[0]] * (HISTORY - len(recent)) + recent
    total = 0.0
    for x in range(1, HISTORY):
        if padded[x] != padded[x - 1]:
            total += LOW_WEIGHT + (x - 1) * (HIGH_WEIGHT - LOW_WEIGHT) / (HISTORY - 2)
    return total * 100.0 / (HISTORY - 1)


def flap_thresholds(service: Service) -> tuple[float, float]:
    """(high, low) for `service`'s alerts. With detection off nothing starts flapping, and
    an alert that was flapping stops at its next state change."""
    detection = service.flapping
    if not detection.enabled:
        return math.inf, math.inf
    return detection.high_threshold, detection.low_threshold


@dataclass
class FlapState:
    """Per (service, dedup key): recent states, whether flapping, the last incident."""

    states: list[int] = field(default_factory=list)
    flapping: bool = False
    incident_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"states": self.states, "flapping": self.flapping, "incident_id": self.incident_id}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FlapState:
        if not data:
            return cls()
        return cls(list(data["states"]), bool(data["flapping"]), str(data["incident_id"]))

    def record(
        self, state: int, high: float = HIGH_THRESHOLD, low: float = LOW_THRESHOLD
    ) -> bool | None:
        """Add a state; True when flapping starts, False when it stops, else None."""
        self.states = [*self.states, state][-HISTORY:]
        percent = percent_state_change(self.states)
        if not self.flapping and percent > high:
            self.flapping = True
            return True
        if self.flapping and percent < low:
            self.flapping = False
            return False
        return None
