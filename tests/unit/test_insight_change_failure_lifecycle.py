"""Change failure rate and failed-change recovery time read the change lifecycle (kind,
status, rollbacks linked to their change): docs/insight.md#change-failure, on hand-computed
fixtures. The old reading counted every change event as a change and only incidents as
failures; each test here fails on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin_common.change.lifecycle import ChangeRecord
from tocsin_insight.domain.changes import IncidentSpan, change_failures, changes_of

T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(event_id: str, minutes: float, **fields: Any) -> ChangeRecord:
    return ChangeRecord(
        event_id=event_id, service_id=fields.pop("service", "checkout"), at=at(minutes), **fields
    )


def outcomes(records: list[ChangeRecord], incidents: list[IncidentSpan] = []) -> dict[str, Any]:  # noqa: B006
    report = change_failures(changes_of(records), incidents, HOUR)
    return {
        "total": report.total_changes,
        "failed": report.failed_changes,
        "rate": report.change_failure_rate,
        "unrecovered": report.unrecovered,
        "by_change": {
            o.change.change_id: (o.failed, o.incident_ids, o.recovery_seconds)
            for o in report.outcomes
        },
    }


def test_the_events_of_one_change_are_one_change() -> None:
    found = outcomes(
        [
            event("e1", 0, change_id="d1", kind="deploy", status="started"),
            event("e2", 10, change_id="d1", kind="deploy", status="succeeded"),
            event("e3", 20),  # a plain change event: a change of its own
        ]
    )
    assert found["total"] == 2 and found["failed"] == 0 and found["rate"] == 0.0


def test_a_failed_change_fails_without_an_incident_and_recovers_by_a_fix_forward() -> None:
    found = outcomes(
        [
            event("e1", 0, change_id="d1", kind="deploy", status="started", environment="prod"),
            event("e2", 5, change_id="d1", kind="deploy", status="failed", environment="prod"),
            # another environment does not fix production
            event("e3", 10, change_id="d2", kind="deploy", status="succeeded", environment="qa"),
            event("e4", 20, change_id="d3", kind="deploy", status="started", environment="prod"),
            event("e5", 35, change_id="d3", kind="deploy", status="succeeded", environment="prod"),
        ]
    )
    assert (found["total"], found["failed"]) == (3, 1)
    # failed reported at 10:05, the fix forward succeeded at 10:35
    assert found["by_change"]["d1"] == (True, (), 1800.0)
    assert found["by_change"]["d3"] == (False, (), None)


def test_a_rollback_is_no_change_of_its_own_and_ends_the_failure() -> None:
    found = outcomes(
        [
            event("e1", 0, change_id="d1", kind="deploy", status="succeeded"),
            event("r1", 12, change_id="rb1", kind="rollback", status="started", rollback_of="d1"),
            event("r2", 15, change_id="rb1", kind="rollback", status="succeeded", rollback_of="d1"),
        ]
    )
    # rolled back without an incident: failed; known when the rollback began, restored at
    # its success
    assert (found["total"], found["failed"], found["rate"]) == (1, 1, 1.0)
    assert found["by_change"] == {"d1": (True, (), 180.0)}


def test_recovery_runs_from_the_first_incident_to_the_rollback_when_that_comes_first() -> None:
    records = [
        event("e1", 0, change_id="d1", kind="deploy", status="started"),
        event("e2", 10, change_id="d1", kind="deploy", status="succeeded"),
        event("r1", 40, change_id="rb1", kind="rollback", status="succeeded", rollback_of="d1"),
    ]
    incidents = [
        IncidentSpan("i1", "checkout", at(5), at(90)),  # during the deploy: blamed
        IncidentSpan("i2", "checkout", at(65), None),  # 55 min after it ended: blamed, open
        IncidentSpan("i3", "checkout", at(75), at(80)),  # 65 min after it ended: not blamed
    ]
    found = outcomes(records, incidents)
    # known at i1 (10:05), restored by the rollback (10:40) though i2 is still open
    assert found["by_change"] == {"d1": (True, ("i1", "i2"), 2100.0)}
    assert found["unrecovered"] == 0


def test_recovery_to_the_last_blamed_incident_resolved_when_not_rolled_back() -> None:
    records = [event("e1", 0, change_id="d1", status="succeeded")]
    incidents = [
        IncidentSpan("i1", "checkout", at(5), at(30)),
        IncidentSpan("i2", "checkout", at(10), at(50)),
    ]
    later_fix = [*records, event("e2", 20, change_id="d2", status="succeeded")]
    # a later successful change does not end a failure that incidents show: they do
    assert outcomes(records, incidents)["by_change"]["d1"] == (True, ("i1", "i2"), 2700.0)
    assert outcomes(later_fix, incidents)["by_change"]["d1"] == (True, ("i1", "i2"), 2700.0)


def test_a_failed_change_not_restored_is_unrecovered() -> None:
    found = outcomes([event("e1", 0, change_id="d1", kind="deploy", status="failed")])
    assert found["by_change"] == {"d1": (True, (), None)}
    assert (found["failed"], found["unrecovered"]) == (1, 1)


def test_a_failed_rollback_does_not_restore_and_a_rollback_elsewhere_does_not_count() -> None:
    found = outcomes(
        [
            event("e1", 0, change_id="d1", kind="deploy", status="failed"),
            event("r1", 5, change_id="rb1", kind="rollback", status="failed", rollback_of="d1"),
            # names d1 but on another service: not d1's rollback
            event("r2", 6, change_id="rb2", kind="rollback", rollback_of="d1", service="search"),
        ]
    )
    assert (found["total"], found["unrecovered"]) == (1, 1)


def test_only_changes_that_began_in_the_window_count() -> None:
    records = [
        event("e1", -30, change_id="d0", status="started"),
        event("e2", 5, change_id="d0", status="failed"),  # began before the window
        event("e3", 10, change_id="d1", status="failed"),
        event("e4", 70, change_id="d2", status="succeeded"),  # after the window
    ]
    found = changes_of(records, at(0), at(60))
    assert [c.change_id for c in found] == ["d1"]
    # d1's fix forward lies after the window and still ends its failure
    assert found[0].fixed_forward == at(70)
