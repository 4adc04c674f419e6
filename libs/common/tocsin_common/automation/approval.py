"""Approval of an automation action: pending -> approved | rejected | expired (pure).

A rule with ``requires_approval`` waits for a person (a signed approve link, the console or
the CLI) before its action runs. A pending approval expires ``approval_ttl`` after it was
requested; a decision on one that is no longer pending is refused with
:class:`ApprovalConflict` (the edge's 409: "moot").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

__all__ = [
    "Approval",
    "ApprovalConflict",
    "ApprovalState",
    "SweepStep",
    "current",
    "decide",
    "request",
    "sweep_step",
]

ApprovalState = Literal["pending", "approved", "rejected", "expired"]
MAX_REASON_CHARS = 1000


class ApprovalConflict(ValueError):
    """The approval is no longer pending; the message says what it is."""


@dataclass(frozen=True)
class Approval:
    key: str  # the firing's idempotency key
    rule_id: str
    incident_id: str
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime
    decided_by: str = ""
    decided_at: datetime | None = None
    reason: str = ""

    @property
    def runnable(self) -> bool:
        """Whether the action may run now."""
        return self.state == "approved"


def request(key: str, rule_id: str, incident_id: str, now: datetime, ttl: timedelta) -> Approval:
    """A new pending approval."""
    if ttl <= timedelta(0):
        raise ValueError("approval_ttl: must be positive")
    return Approval(key, rule_id, incident_id, "pending", now, now + ttl)


def current(approval: Approval, now: datetime) -> Approval:
    """The approval as of ``now``: a pending one past its expiry is expired."""
    if approval.state == "pending" and now >= approval.expires_at:
        return replace(approval, state="expired", decided_at=approval.expires_at)
    return approval


def decide(
    approval: Approval,
    verdict: Literal["approve", "reject"],
    actor: str,
    now: datetime,
    reason: str = "",
) -> Approval:
    """Approve or reject a pending approval; :class:`ApprovalConflict` if it is not pending
    (already decided, or expired), ValueError naming the field for a bad argument."""
    if not actor.strip():
        raise ValueError("actor: is required")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason: {len(reason):,} characters, at most {MAX_REASON_CHARS:,}")
    if verdict not in ("approve", "reject"):
        raise ValueError(f"verdict: {verdict!r} is not approve or reject")
    now_state = current(approval, now)
    if now_state.state != "pending":
        by = f" by {now_state.decided_by}" if now_state.decided_by else ""
        raise ApprovalConflict(f"approval {approval.key} is already {now_state.state}{by}")
    return replace(
        now_state,
        state="approved" if verdict == "approve" else "rejected",
        decided_by=actor,
        decided_at=now,
        reason=reason.strip(),
    )


SweepStep = Literal["wait", "expire", "drop"]


def sweep_step(stored: Approval | None, now: datetime) -> SweepStep:
    """What the expiry sweep does with a firing on its list of approvals to watch:
    ``expire`` one that is (or was already marked) expired, which writes its timeline entry
    (once: its id derives from the firing's key); ``drop`` one decided or gone; ``wait``
    for one still pending before its expiry."""
    if stored is None:
        return "drop"
    state = current(stored, now).state
    if state == "expired":
        return "expire"
    return "wait" if state == "pending" else "drop"
