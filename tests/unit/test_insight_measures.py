"""Per-incident measures (PagerDuty's definitions) and their aggregates, hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tocsin_insight.domain.measures import (
    Engagement,
    IncidentTimes,
    incident_kpis,
    measure,
    top_sources,
)

T0 = datetime(2026, 12, 4, 10, tzinfo=UTC)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# alice acks after 4 min, bob after 10 min, alice again at 12 (not a new engagement);
# resolved at 40 min.
TEAM_EFFORT = IncidentTimes(
    "inc-1",
    T0,
    resolved=t(40),
    acknowledgements=(
        Engagement("bob", t(10)),
        Engagement("alice", t(4)),
        Engagement("alice", t(12)),
    ),
    highest_level=2,
    escalation_count=1,
    reassignment_count=1,
    snoozed_seconds=300,
    alerts=5,
    suppressed_alerts={"silence": 2, "flapping": 1},
)
QUICK = IncidentTimes("inc-2", T0, resolved=t(6), acknowledgements=(Engagement("carol", t(2)),))
SELF_HEALED = IncidentTimes("inc-3", T0, resolved=t(3), auto_resolved=True, alerts=2)
OPEN = IncidentTimes("inc-4", T0, highest_level=3, escalation_count=2, alerts=1)


def test_measures_of_a_multi_responder_incident() -> None:
    m = measure(TEAM_EFFORT)
    assert m.seconds_to_first_ack == 240
    assert m.seconds_to_resolve == 2400
    assert m.engaged_user_count == 2
    assert m.seconds_to_engage == 360  # alice 4 min -> bob 10 min
    assert m.seconds_to_mobilize == 600  # creation -> bob
    assert m.engaged_seconds == (40 - 4) * 60 + (40 - 10) * 60
    assert m.escalated


def test_single_responder_has_no_engage_or_mobilize_time() -> None:
    m = measure(QUICK)
    assert (m.seconds_to_first_ack, m.seconds_to_resolve) == (120, 360)
    assert m.seconds_to_engage is None and m.seconds_to_mobilize is None
    assert m.engaged_seconds == 240 and not m.escalated


def test_unacknowledged_and_open_incidents() -> None:
    healed = measure(SELF_HEALED)
    assert healed.seconds_to_first_ack is None and healed.seconds_to_resolve == 180
    assert healed.engaged_user_count == 0 and healed.engaged_seconds == 0
    still_open = measure(OPEN)
    assert still_open.seconds_to_resolve is None and still_open.engaged_seconds is None
    assert still_open.escalated


def test_aggregates() -> None:
    kpis = incident_kpis([TEAM_EFFORT, QUICK, SELF_HEALED, OPEN])
    assert kpis.total_incident_count == 4
    assert kpis.total_incidents_acknowledged == 2
    assert kpis.total_incidents_auto_resolved == 1
    assert kpis.total_incidents_reassigned == 1
    assert kpis.total_escalation_count == 3
    assert kpis.escalated_incidents == 2 and kpis.escalation_rate == 0.5
    assert kpis.auto_resolved_share == pytest.approx(1 / 3)  # of the 3 resolved
    assert kpis.total_engaged_seconds == 3960 + 240
    assert kpis.total_snoozed_seconds == 300
    ack = kpis.seconds_to_first_ack
    assert (ack.count, ack.mean, ack.p50, ack.max) == (2, 180, 180, 240)
    resolve = kpis.seconds_to_resolve
    assert resolve.count == 3 and resolve.mean == pytest.approx((2400 + 360 + 180) / 3)
    assert resolve.p50 == 360
    assert kpis.seconds_to_engage.count == 1 and kpis.seconds_to_engage.max == 360
    assert kpis.total_alerts == 9 and kpis.alerts_per_incident == 2.25
    assert kpis.suppressed_alerts == 3 and kpis.suppressed_share == pytest.approx(3 / 9)
    assert kpis.suppressed_by_reason == {"flapping": 1, "silence": 2}


def test_empty_group() -> None:
    kpis = incident_kpis([])
    assert kpis.total_incident_count == 0
    assert kpis.escalation_rate is None and kpis.auto_resolved_share is None
    assert kpis.alerts_per_incident is None and kpis.suppressed_share is None
    assert kpis.seconds_to_first_ack.count == 0


def test_top_sources() -> None:
    pairs = [("db-1", 5), ("web-1", 7), ("db-1", 4), ("api", 9), ("zzz", 1)]
    assert top_sources(pairs, 3) == [("api", 9), ("db-1", 9), ("web-1", 7)]
    assert top_sources([], 3) == []
