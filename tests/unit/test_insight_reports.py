"""Report requests are checked field by field before any SQL is built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from tocsin_insight import reports

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_report_requests_are_checked_field_by_field() -> None:
    with pytest.raises(reports.QueryError, match=r"group_by\[1\]: 'colour'"):
        reports.report_query(reports.make_filter(), ["service", "colour"], "")
    with pytest.raises(reports.QueryError, match="period: 'year'"):
        reports.report_query(reports.make_filter(), [], "year")
    with pytest.raises(reports.QueryError, match=r"filter\.time_zone"):
        reports.make_filter(time_zone="Mars/Olympus")
    with pytest.raises(reports.QueryError, match=r"filter\.priority"):
        reports.make_filter(priority="P 1; drop")
    with pytest.raises(reports.QueryError, match=r"filter\.until"):
        reports.make_filter(since=T0, until=T0)


def test_report_sql_groups_by_the_dimensions_and_the_local_period() -> None:
    query = reports.report_query(
        reports.make_filter(team_id="sre", time_zone="Europe/Paris"), ["service", "person"], "month"
    )
    statement, params = reports.build_report("g2", query)
    text = statement.as_string(None)
    assert '"insight_g2".incident_facts' in text
    assert "date_trunc('month', created_at AT TIME ZONE %(tz)s)" in text
    assert '"first_ack_by" AS "g_person"' in text and "GROUP BY 1, 2, 3" in text
    assert params == {"team_id": "sre", "tz": "Europe/Paris"}
    with pytest.raises(ValueError, match="generation"):
        reports.build_report("g2; DROP TABLE x", query)


def test_the_facts_are_read_where_the_rollup_has_no_whole_day() -> None:
    day = datetime(2026, 3, 2, tzinfo=UTC).date()
    days = [(day + timedelta(days=d), None) for d in (0, 1, 3)]  # 2, 3 and 5 March
    since = datetime(2026, 3, 1, 18, tzinfo=UTC)
    f = reports.make_filter(since=since, until=datetime(2026, 3, 6, 6, tzinfo=UTC))
    assert reports.plan_ranges(f, days) == (
        (since, datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)),
        (datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 6, 6, tzinfo=UTC)),
    )
    # Open ends stay open; no rollup day: one range, the whole filter.
    assert reports.plan_ranges(reports.make_filter(), days) == (
        (None, datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)),
        (datetime(2026, 3, 6, tzinfo=UTC), None),
    )
    assert reports.plan_ranges(reports.make_filter(), []) == ((None, None),)
    # A rollup day that ends exactly at until leaves nothing after it.
    g = reports.make_filter(
        since=datetime(2026, 3, 2, tzinfo=UTC), until=datetime(2026, 3, 4, tzinfo=UTC)
    )
    assert reports.plan_ranges(g, days[:2]) == ()


def part(
    service: str | None, period: datetime | None, acks: list[float], **m: Any
) -> tuple[Any, ...]:
    measures = {
        "incidents": len(acks) + m.get("unacked", 0),
        "escalated": m.get("escalated", 0),
        "resolved": m.get("resolved", 0),
        "auto_resolved": m.get("auto_resolved", 0),
        "alerts": m.get("alerts", 0),
        "suppressed_alerts": m.get("suppressed", 0),
        "notifications": 0,
        "escalations": 0,
        "reassignments": 0,
        "snoozed_seconds": Decimal(m.get("snoozed", "0")),
    }
    group = () if service is None else (service,)
    return (*group, period, *measures.values(), sorted(acks), [], [], [])


def test_parts_of_a_group_are_summed_and_their_values_merged() -> None:
    week = datetime(2026, 3, 2, tzinfo=UTC)
    rows = [
        part("web", week, [30.0, 40.0], resolved=2, auto_resolved=1, alerts=4, snoozed="0.1"),
        part("api", week, [5.0]),
        part(
            "web", week, [10.0, 20.0], unacked=1, escalated=1, alerts=6, suppressed=5, snoozed="0.2"
        ),
    ]
    api, web = reports.merge_rows(["service"], rows)
    assert api.group == {"service": "api"} and api.incidents == 1
    assert web.group == {"service": "web"} and web.period_start == week
    ack = web.seconds_to_first_ack
    # 10, 20, 30, 40: percentile_cont(0.9) = 37, (0.95) = 38.5
    assert (ack.count, ack.mean, ack.p50, ack.p90, ack.p95, ack.max) == (4, 25, 25, 37, 38.5, 40)
    assert web.incidents == 5 and web.escalation_rate == 0.2
    assert web.auto_resolved_share == 0.5 and web.alerts_per_incident == 2
    assert web.suppressed_share == 0.5
    assert web.snoozed_seconds == 0.3  # exact decimal sum, not 0.1 + 0.2 in floats
    assert web.seconds_to_resolve == reports.DistributionRow(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # Means do not depend on how the values were split (math.fsum: an exactly rounded sum).
    values = [0.1, 0.2, 0.3, 1e-3, 7.7]
    one = reports.merge_rows([], [part(None, None, values)])
    split = reports.merge_rows([], [part(None, None, values[:2]), part(None, None, values[2:])])
    assert one == split
