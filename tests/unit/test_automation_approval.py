"""The approval state machine of automation actions: pending -> approved/rejected/expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tocsin_common.automation.approval import (
    Approval,
    ApprovalConflict,
    current,
    decide,
    request,
)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(hours=1)


def pending() -> Approval:
    return request("automation/inc-1/restart/level-2", "restart", "inc-1", T0, TTL)


TRANSITIONS = [
    # (verdict, minutes after the request, resulting state or the conflict's text)
    ("approve", 5, "approved"),
    ("reject", 5, "rejected"),
    ("approve", 59, "approved"),
    ("approve", 60, "conflict: is already expired"),
    ("reject", 61, "conflict: is already expired"),
]


@pytest.mark.parametrize(("verdict", "minutes", "expected"), TRANSITIONS)
def test_transitions(verdict: str, minutes: int, expected: str) -> None:
    at = T0 + timedelta(minutes=minutes)
    if expected.startswith("conflict: "):
        with pytest.raises(ApprovalConflict, match=expected.removeprefix("conflict: ")):
            decide(pending(), verdict, "mia", at)  # type: ignore[arg-type]
        return
    decided = decide(pending(), verdict, "mia", at, " looks safe ")  # type: ignore[arg-type]
    assert (decided.state, decided.decided_by, decided.decided_at) == (expected, "mia", at)
    assert decided.reason == "looks safe"
    assert decided.runnable is (expected == "approved")


def test_pending_is_not_runnable_and_expires_on_time() -> None:
    approval = pending()
    assert approval.state == "pending" and not approval.runnable
    assert approval.expires_at == T0 + TTL
    assert current(approval, T0 + TTL - timedelta(seconds=1)).state == "pending"
    expired = current(approval, T0 + TTL)
    assert (expired.state, expired.decided_at, expired.runnable) == ("expired", T0 + TTL, False)


@pytest.mark.parametrize("first", ["approve", "reject"])
def test_a_decided_approval_cannot_be_decided_again(first: str) -> None:
    decided = decide(pending(), first, "mia", T0)  # type: ignore[arg-type]
    with pytest.raises(ApprovalConflict, match=f"already {decided.state} by mia"):
        decide(decided, "approve", "ola", T0 + timedelta(minutes=1))
    assert current(decided, T0 + 2 * TTL) == decided  # a decision does not expire


@pytest.mark.parametrize(
    ("actor", "reason", "verdict", "fragment"),
    [
        ("", "", "approve", "actor: is required"),
        ("mia", "x" * 1001, "approve", "reason: 1,001 characters"),
        ("mia", "", "maybe", "verdict: 'maybe'"),
    ],
)
def test_bad_arguments_name_the_field(actor: str, reason: str, verdict: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        decide(pending(), verdict, actor, T0, reason)  # type: ignore[arg-type]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="approval_ttl: must be positive"):
        request("k", "r", "i", T0, timedelta(0))
