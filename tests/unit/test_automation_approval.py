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
    sweep_step,
)
from tocsin_common.timeline import approval_expired_entry, entry_id
from tocsin_notification.approvals import _decoded

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


def test_the_expiry_sweep_expires_what_nobody_decided_in_time_and_drops_the_rest() -> None:
    waiting = pending()
    assert sweep_step(waiting, T0 + TTL - timedelta(seconds=1)) == "wait"
    assert sweep_step(waiting, T0 + TTL) == "expire"
    # Marked expired by a sweep that died before it took the firing off its list: the
    # next sweep writes the entry again (appended once: same id) and takes it off.
    assert sweep_step(current(waiting, T0 + TTL), T0 + TTL) == "expire"
    approved = decide(waiting, "approve", "mia", T0 + timedelta(minutes=5))
    assert sweep_step(approved, T0 + 2 * TTL) == "drop"
    rejected = decide(waiting, "reject", "mia", T0 + timedelta(minutes=5))
    assert sweep_step(rejected, T0 + 2 * TTL) == "drop"
    assert sweep_step(None, T0) == "drop"


def test_the_expired_entry_derives_its_id_from_the_firing() -> None:
    expires = T0 + TTL
    what = "rule restart (level 2): POST https://runner.example.com/…"
    entry = approval_expired_entry("automation/inc-1/restart/level-2", "restart", what, expires)
    again = approval_expired_entry("automation/inc-1/restart/level-2", "restart", what, expires)
    other = approval_expired_entry("automation/inc-2/restart/level-2", "restart", what, expires)
    assert entry.event_id == again.event_id != other.event_id
    assert entry.event_id == entry_id("approval-expired", "automation/inc-1/restart/level-2")
    assert entry.actor == "automation:restart"
    assert entry.at.ToDatetime(tzinfo=UTC) == expires
    assert entry.message == (
        "Automation rule restart (level 2): POST https://runner.example.com/…: its approval "
        "expired at 2026-06-01T10:00:00+00:00 without a decision; it will not run"
    )


def test_the_sweep_drops_a_record_it_cannot_read_instead_of_failing_on_it() -> None:
    assert _decoded("k", None) is None
    assert _decoded("k", b"not json") is None
    assert _decoded("k", b'{"key": "k"}') is None  # fields missing
