"""Recurring incidents become problems (docs/insight.md#problems).

Rule (``insight.recurrence``): when one service has ``min_incidents`` incidents with the
same fingerprint (the incident's group key, else its dedup key) created within ``window``
of each other - the first and the last at most ``window`` apart - a problem opens, at the
creation of the incident that completed the count. While it is open, each further incident
of that service and fingerprint created within ``window`` of the problem's previous one
joins it. Once ``window`` passes without one, the problem's run is over: a later burst
opens a new problem. Problems are found from the list of incidents alone, so replaying the
same incidents gives the same problems, with the same ids.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Problem", "RecurrenceInput", "find_problems", "fingerprint_of"]


@dataclass(frozen=True)
class RecurrenceInput:
    """What recurrence needs of an incident."""

    incident_id: str
    service: str
    fingerprint: str
    created: datetime


@dataclass(frozen=True)
class Problem:
    """Incidents of one service and fingerprint that keep coming back."""

    problem_id: str
    service: str
    fingerprint: str
    opened_at: datetime
    first_at: datetime
    last_at: datetime
    incident_ids: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.incident_ids)


def fingerprint_of(group_key: str, dedup_keys: Iterable[str]) -> str:
    """An incident's fingerprint: its group key, else its first dedup key, else ``""``."""
    if group_key:
        return group_key
    return next((k for k in dedup_keys if k), "")


def _problem_id(service: str, fingerprint: str, opened_at: datetime, first: str) -> str:
    digest = hashlib.sha256(
        f"{service}\x00{fingerprint}\x00{opened_at.isoformat()}\x00{first}".encode()
    ).hexdigest()
    return f"prb-{digest[:20]}"


def find_problems(
    incidents: Iterable[RecurrenceInput], min_incidents: int, window: timedelta
) -> list[Problem]:
    """Every problem in ``incidents`` under the rule, ordered by opening time. Incidents
    without a fingerprint never form a problem."""
    if min_incidents < 2:
        raise ValueError(f"min_incidents: {min_incidents} is below 2")
    if window <= timedelta(0):
        raise ValueError("window: must be greater than 0")
    groups: dict[tuple[str, str], list[RecurrenceInput]] = defaultdict(list)
    for item in incidents:
        if item.fingerprint:
            groups[(item.service, item.fingerprint)].append(item)
    problems: list[Problem] = []
    for (service, fingerprint), items in groups.items():
        items.sort(key=lambda i: (i.created, i.incident_id))
        members: list[RecurrenceInput] = []  # the open problem's incidents
        opened: datetime | None = None
        recent: list[RecurrenceInput] = []  # candidates within window of the newest
        for item in items:
            if opened is not None:
                if item.created - members[-1].created <= window:
                    members.append(item)
                    continue
                problems.append(_problem(service, fingerprint, opened, members))
                opened, members = None, []
            recent = [r for r in recent if item.created - r.created <= window]
            recent.append(item)
            if len(recent) >= min_incidents:
                opened, members, recent = item.created, recent, []
        if opened is not None:
            problems.append(_problem(service, fingerprint, opened, members))
    problems.sort(key=lambda p: (p.opened_at, p.service, p.fingerprint))
    return problems


def _problem(
    service: str, fingerprint: str, opened: datetime, members: list[RecurrenceInput]
) -> Problem:
    return Problem(
        problem_id=_problem_id(service, fingerprint, opened, members[0].incident_id),
        service=service,
        fingerprint=fingerprint,
        opened_at=opened,
        first_at=members[0].created,
        last_at=members[-1].created,
        incident_ids=tuple(m.incident_id for m in members),
    )
