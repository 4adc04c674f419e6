"""Availability and error budget from impact, recurring incidents (problems), change failure
rate and failed-change recovery time, on hand-computed fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tocsin_insight.domain.availability import ImpactSlice, availability
from tocsin_insight.domain.changes import Change, IncidentSpan, change_failures, dependents
from tocsin_insight.domain.recurrence import RecurrenceInput, find_problems, fingerprint_of

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=30)  # 2,592,000 s


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    return START + timedelta(days=days, hours=hours, minutes=minutes)


# --- availability -----------------------------------------------------------------------------


def test_weighted_impact_budget_and_burn_rate() -> None:
    slices = [
        ImpactSlice("checkout", at(0), at(0, minutes=10), "major"),  # 600 impact s
        ImpactSlice("checkout", at(1, 10), at(1, 10, 20), "partial"),  # 1200 s x 0.5 = 600
        # Overlaps the partial outage for 10 min (the partial weight wins there), then
        # 30 min alone: 1800 s x 0.25 = 450.
        ImpactSlice("checkout", at(1, 10, 10), at(1, 10, 50), "degraded"),
        ImpactSlice("payments", at(2), at(3), "major"),  # another service
    ]
    result = availability("checkout", slices, START, END, 99.9)
    assert result.seconds == 2_592_000
    assert result.impact_seconds == 1650
    assert result.availability == pytest.approx(1 - 1650 / 2_592_000)
    assert result.error_budget_seconds == pytest.approx(2592)
    assert result.budget_remaining_seconds == pytest.approx(942)
    assert result.budget_remaining_ratio == pytest.approx(942 / 2592)
    assert result.burn_rate == pytest.approx(1650 / 2592)
    assert result.up_time_pct == pytest.approx(100 * (1 - 600 / 2_592_000))
    assert result.met and result.target == pytest.approx(0.999)


def test_overlapping_majors_count_once_and_open_slices_run_to_the_end() -> None:
    slices = [
        ImpactSlice("web", at(5), at(5, 2), "major"),
        ImpactSlice("web", at(5, 1), at(5, 3), "major"),  # overlaps: 3 h in all, not 4
        ImpactSlice("web", at(-1), at(0, 1), "partial"),  # starts before the window: 1 h in it
        ImpactSlice("web", at(29, 23), None, "degraded"),  # still open: 1 h to the window's end
    ]
    result = availability("web", slices, START, END, 99.0)
    assert result.impact_seconds == 3 * 3600 + 0.5 * 3600 + 0.25 * 3600
    assert result.up_time_pct == pytest.approx(100 * (1 - 3 * 3600 / 2_592_000))
    # 25,920 s of budget at 99 %; 13,500 spent.
    assert result.budget_remaining_seconds == pytest.approx(25_920 - 13_500)


def test_overspent_budget_is_negative_and_burn_above_one() -> None:
    day = timedelta(days=1)
    result = availability(
        "web", [ImpactSlice("web", START, START + timedelta(minutes=3), "major")],
        START, START + day, 99.9,
    )  # fmt: skip
    # A day at 99.9 % allows 86.4 s; 180 s were spent.
    assert result.budget_remaining_seconds == pytest.approx(86.4 - 180)
    assert result.burn_rate == pytest.approx(180 / 86.4)
    assert not result.met


def test_no_impact_is_full_availability() -> None:
    result = availability("web", [], START, END, 99.9)
    assert (result.availability, result.burn_rate, result.budget_remaining_ratio) == (1, 0, 1)
    assert result.up_time_pct == 100


def test_availability_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="target_percent"):
        availability("web", [], START, END, 100)
    with pytest.raises(ValueError, match="window_end"):
        availability("web", [], END, START, 99)
    with pytest.raises(ValueError, match="level"):
        ImpactSlice("web", START, END, "total")  # type: ignore[arg-type]


# --- problems ---------------------------------------------------------------------------------


def incident(ident: str, service: str, fingerprint: str, day: float) -> RecurrenceInput:
    return RecurrenceInput(ident, service, fingerprint, at(day))


def test_three_in_thirty_days_open_a_problem_that_later_ones_join() -> None:
    incidents = [
        incident("a1", "checkout", "db-down", 1),
        incident("a2", "checkout", "db-down", 10),
        incident("a3", "checkout", "db-down", 25),  # third within 30 days: opens
        incident("a4", "checkout", "db-down", 50),  # 25 days after a3: joins
        incident("a5", "checkout", "db-down", 90),  # 40 days of quiet: the run is over
        incident("a6", "checkout", "db-down", 91),
        incident("a7", "checkout", "db-down", 95),  # a5, a6, a7: a second problem
        incident("d1", "checkout", "disk", 1),
        incident("d2", "checkout", "disk", 20),
        incident("d3", "checkout", "disk", 40),  # never 3 within 30 days
        incident("p1", "payments", "db-down", 2),  # same fingerprint, other service
        incident("p2", "payments", "db-down", 3),
        *(incident(f"n{i}", "checkout", "", i) for i in range(5)),  # no fingerprint
    ]
    problems = find_problems(incidents, 3, timedelta(days=30))
    assert [(p.service, p.fingerprint, p.opened_at, p.incident_ids) for p in problems] == [
        ("checkout", "db-down", at(25), ("a1", "a2", "a3", "a4")),
        ("checkout", "db-down", at(95), ("a5", "a6", "a7")),
    ]
    first = problems[0]
    assert (first.first_at, first.last_at, first.count) == (at(1), at(50), 4)
    assert first.problem_id.startswith("prb-") and first.problem_id != problems[1].problem_id
    # Same incidents in another order: same problems, same ids.
    assert find_problems(reversed(incidents), 3, timedelta(days=30)) == problems


def test_window_edge_is_inclusive_and_rule_is_configurable() -> None:
    edge = [incident(f"e{i}", "s", "f", d) for i, d in enumerate((0, 15, 30))]
    assert len(find_problems(edge, 3, timedelta(days=30))) == 1
    assert find_problems(edge, 3, timedelta(days=29)) == []
    assert len(find_problems(edge[:2], 2, timedelta(days=30))) == 1
    with pytest.raises(ValueError, match="min_incidents"):
        find_problems(edge, 1, timedelta(days=30))


def test_fingerprint_of() -> None:
    assert fingerprint_of("grp", ["k1"]) == "grp"
    assert fingerprint_of("", ["", "k2"]) == "k2"
    assert fingerprint_of("", []) == ""


# --- change failure ---------------------------------------------------------------------------

DEPENDS_ON = {"checkout": ["payments"], "payments": ["db"], "db": [], "search": []}


def test_dependents_are_transitive() -> None:
    down = dependents(DEPENDS_ON)
    assert down["db"] == {"payments", "checkout"}
    assert down["payments"] == {"checkout"}
    assert down["checkout"] == frozenset() and down["search"] == frozenset()


CHANGES = [
    Change("c1", "db", at(0, 10)),
    Change("c2", "search", at(0, 11)),
    Change("c3", "checkout", at(0, 12)),
    Change("c4", "payments", at(0, 13)),
]
INCIDENTS = [
    IncidentSpan("i1", "checkout", at(0, 10, 30), at(0, 11)),  # downstream of db
    IncidentSpan("i2", "db", at(0, 10, 45), at(0, 11, 30)),
    IncidentSpan("i3", "search", at(0, 12, 30), at(0, 13)),  # 90 min after c2: too late
    IncidentSpan("i4", "checkout", at(0, 12), at(0, 12, 5)),  # at c3's instant: not after it
    IncidentSpan("i5", "checkout", at(0, 13, 20), None),  # after c4 (payments), still open
]


def test_change_failure_rate_and_recovery_with_dependents() -> None:
    report = change_failures(CHANGES, INCIDENTS, timedelta(hours=1), DEPENDS_ON)
    assert [(o.change.change_id, o.incident_ids, o.recovery_seconds) for o in report.outcomes] == [
        ("c1", ("i1", "i2"), 3600.0),  # 10:30 first created -> 11:30 last resolved
        ("c2", (), None),
        ("c3", (), None),
        ("c4", ("i5",), None),
    ]
    assert (report.total_changes, report.failed_changes, report.change_failure_rate) == (4, 2, 0.5)
    assert report.unrecovered == 1
    assert report.recovery.count == 1 and report.recovery.mean == 3600


def test_change_failure_on_the_changed_service_only() -> None:
    report = change_failures(CHANGES, INCIDENTS, timedelta(hours=1))
    outcomes = {o.change.change_id: o for o in report.outcomes}
    assert outcomes["c1"].incident_ids == ("i2",) and outcomes["c1"].recovery_seconds == 2700
    assert not outcomes["c4"].failed
    assert report.change_failure_rate == 0.25 and report.unrecovered == 0


def test_no_changes() -> None:
    report = change_failures([], INCIDENTS, timedelta(hours=1))
    assert report.change_failure_rate is None and report.recovery.count == 0
    with pytest.raises(ValueError, match="window"):
        change_failures(CHANGES, INCIDENTS, timedelta(0))
