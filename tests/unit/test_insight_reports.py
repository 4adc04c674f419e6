"""Report requests are checked field by field before any SQL is built."""

from __future__ import annotations

from datetime import UTC, datetime

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
