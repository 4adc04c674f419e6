"""The post-incident review draft: a golden text for a full incident
(test_insight_review_golden.md, reviewed by hand: its figures are computed in the comments
below), determinism under any input order, escaping of people's text, and an open incident
with little history."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tocsin_insight.domain.measures import Engagement
from tocsin_insight.domain.review import (
    ReviewAlert,
    ReviewChange,
    ReviewEvent,
    ReviewInput,
    ReviewNote,
    ReviewNotification,
    format_seconds,
    review_draft,
)
from tocsin_insight.domain.sla import SlaTargets, sla_outcome


def utc(h: int, m: int, s: int = 0) -> datetime:
    return datetime(2026, 12, 4, h, m, s, tzinfo=UTC)


CREATED = utc(9, 58)
RESOLVED = utc(10, 40)
ACKS = (Engagement("alice", utc(10, 6)), Engagement("bob", utc(10, 4, 10)))
SLA = sla_outcome(
    SlaTargets("P1", timedelta(minutes=5), timedelta(minutes=30), None),
    CREATED,
    utc(10, 4, 10),
    RESOLVED,
    utc(12, 0),
)
INPUT = ReviewInput(
    incident_id="inc-7f3a",
    title="Checkout: p99 latency over 2 s | EU",
    service="checkout",
    team="sre",
    status="resolved",
    priority="P1",
    urgency="high",
    severity="critical",
    created=CREATED,
    resolved=RESOLVED,
    resolved_by="alice",
    acknowledgements=ACKS,
    highest_level=2,
    events=(
        ReviewEvent(utc(10, 40), "resolved", "alice", "Resolved"),
        ReviewEvent(CREATED, "triggered", "correlation", "Incident opened"),
        ReviewEvent(utc(10, 3), "escalated", "escalation", "Level 2 reached"),
        ReviewEvent(utc(10, 4, 10), "acknowledged", "bob", "Acknowledged"),
        ReviewEvent(utc(10, 6), "acknowledged", "alice", "Acknowledged"),
    ),
    alerts=(
        ReviewAlert(utc(10, 1, 30), "error rate 5% on checkout_eu", "grafana", "error", "k2"),
        ReviewAlert(CREATED, "p99 latency > 2s on checkout-eu", "prometheus", "critical", "k1"),
        ReviewAlert(
            utc(10, 3), "p99 latency > 2s on checkout-us", "prometheus", "critical", "k3", "silence"
        ),
    ),
    notifications=(
        ReviewNotification(utc(9, 59, 2), "alice", "voice", "failed: no answer"),
        ReviewNotification(utc(9, 58, 2), "alice", "sms", "delivered"),
        ReviewNotification(utc(10, 3, 1), "bob", "sms", "delivered"),
    ),
    notes=(ReviewNote(utc(10, 5), "bob", "Rolling back v2.14.0, see <runbook>\n*not* a DB issue"),),
    changes=(
        ReviewChange(
            utc(9, 51),
            "c-981",
            "checkout",
            "checkout v2.14.0 rolled out",
            "same service, 7 min before",
        ),
    ),
    sla=SLA,
    time_zone="Europe/Berlin",
)

# Hand check of the figures: opened 09:58:00 UTC (10:58 CET); bob acknowledges at +6m 10s
# (P1's 5m ack target: breached by 1m 10s, due 11:03 CET), alice at +8m; resolved at +42m
# (30m target: breached by 12m, due 11:28 CET). seconds_to_engage = 10:06:00 - 10:04:10 =
# 1m 50s; engaged_seconds = (42m - 6m 10s) + (42m - 8m) = 35m 50s + 34m = 1h 9m 50s.
GOLDEN = (Path(__file__).parent / "test_insight_review_golden.md").read_text(encoding="utf-8")


def test_golden_draft() -> None:
    assert review_draft(INPUT) == GOLDEN


def test_same_draft_whatever_the_input_order() -> None:
    rng = random.Random(11)
    for _ in range(5):
        shuffled = replace(
            INPUT,
            acknowledgements=tuple(rng.sample(INPUT.acknowledgements, len(INPUT.acknowledgements))),
            events=tuple(rng.sample(INPUT.events, len(INPUT.events))),
            alerts=tuple(rng.sample(INPUT.alerts, len(INPUT.alerts))),
            notifications=tuple(rng.sample(INPUT.notifications, len(INPUT.notifications))),
        )
        assert review_draft(shuffled) == GOLDEN


def test_people_text_cannot_break_tables_or_inject_html() -> None:
    hostile = replace(
        INPUT,
        title="a | b <script>alert(1)</script>",
        notes=(ReviewNote(utc(10, 5), "bob", "x | y | z\n[link](http://evil) `code`"),),
        changes=(ReviewChange(utc(9, 51), "id`with`ticks", "checkout", "s|u|m", "r\nr"),),
    )
    text = review_draft(hostile)
    assert "<script>" not in text and "&lt;script&gt;" in text
    for line in text.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) in (4, 6, 7), line  # 2, 4 or 5 columns, never more
    assert "\\[link\\](http://evil) \\`code\\`" in text
    assert "(`idwithticks`)" in text


def test_open_incident_with_little_history() -> None:
    bare = ReviewInput(
        incident_id="inc-1",
        title="Disk full",
        service="db",
        created=CREATED,
        status="triggered",
    )
    text = review_draft(bare)
    assert "| Classification | no priority |" in text
    assert "| First acknowledged | never |" in text
    assert "| Resolved | not yet |" in text
    assert "| People paged | nobody (0 notifications) |" in text
    assert "No SLA policy applies to this incident's priority." in text
    assert "No change was linked to this incident." in text
    assert "No notes were added." in text
    assert "2026-12-04 09:58:00 UTC" in text  # shown in UTC by default
    auto = review_draft(replace(bare, resolved=utc(10, 0), auto_resolved=True, status="resolved"))
    assert "| Resolved | 2026-12-04 10:00:00 UTC automatically, 2m after it opened |" in auto


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (3725, "1h 2m 5s"), (90000, "1d 1h"), (-420, "-7m")],
)
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text
