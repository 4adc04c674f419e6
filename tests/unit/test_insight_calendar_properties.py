"""Properties of the business-time clock on random calendars, zones and instants (around
both daylight-saving changes of 2026): business time is additive, never exceeds wall time,
and the deadline of a target is exactly where that much business time has passed."""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from tocsin_insight.domain.calendar import (
    Calendar,
    WeeklyWindow,
    business_deadline,
    business_seconds,
)

FUZZ_SCALE = int(os.environ.get("TOCSIN_FUZZ_SCALE", "1"))
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]
# Instants from mid-March to mid-November 2026: both DST changes in both hemispheres.
BASE = datetime(2026, 3, 1, tzinfo=UTC)
instants = st.integers(0, 260 * 86400).map(lambda s: BASE + timedelta(seconds=s))
times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
windows = st.builds(WeeklyWindow, st.integers(0, 6), times, times)
calendars = st.builds(
    Calendar,
    st.sampled_from(ZONES),
    st.lists(windows, min_size=1, max_size=5).map(tuple),
    st.frozensets(st.dates(BASE.date(), BASE.date() + timedelta(days=260)), max_size=20),
)


@settings(max_examples=150 * FUZZ_SCALE, deadline=None)
@given(calendars, instants, instants, instants)
def test_additive_and_bounded(calendar: Calendar, a: datetime, b: datetime, c: datetime) -> None:
    a, b, c = sorted((a, b, c))
    ab, bc = business_seconds(calendar, a, b), business_seconds(calendar, b, c)
    assert business_seconds(calendar, a, c) == ab + bc
    assert 0 <= ab <= (b - a).total_seconds()


@settings(max_examples=150 * FUZZ_SCALE, deadline=None)
@given(calendars, instants, st.integers(0, 40 * 3600))  # any calendar has 65 h in 5 years
def test_deadline_inverts_business_seconds(
    calendar: Calendar, start: datetime, target: int
) -> None:
    due = business_deadline(calendar, start, target)
    assert due >= start
    assert business_seconds(calendar, start, due) == target
    if target > 0:  # and not a moment earlier
        assert business_seconds(calendar, start, due - timedelta(seconds=1)) < target
