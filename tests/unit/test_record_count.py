"""bench/record_count.py's pure part: what is counted, the deltas, metric sums, the report."""

from __future__ import annotations

import pytest

from bench.record_count import counted, deltas, metric_sum, report


def test_tocsin_topics_and_changelogs_count_kafkas_own_do_not() -> None:
    assert counted("incidents.events")
    assert counted("notifications.status")
    assert counted("tocsin-correlation-incidents-changelog")
    assert not counted("__consumer_offsets")
    assert not counted("__transaction_state")
    assert not counted("tocsin-correlation-__assignor-__leader")
    assert not counted("someone.elses.topic")


def test_deltas_sum_partitions_per_topic_and_skip_uncounted() -> None:
    before = {("incidents.events", 0): 5, ("incidents.events", 1): 2, ("__consumer_offsets", 0): 9}
    after = {
        ("incidents.events", 0): 7,
        ("incidents.events", 1): 3,
        ("__consumer_offsets", 0): 40,
        ("alerts.normalized", 3): 4,  # a partition not seen before counts from 0
        ("changes", 0): 0,
    }
    assert deltas(before, after) == {"alerts.normalized": 4, "incidents.events": 3}


def test_an_offset_going_back_is_an_error_naming_the_partition() -> None:
    with pytest.raises(ValueError, match=r"incidents.events\[2\]: end offset went back"):
        deltas({("incidents.events", 2): 10}, {("incidents.events", 2): 3})


def test_metric_sum_adds_the_samples_whose_labels_match() -> None:
    text = "\n".join(
        [
            "# HELP tocsin_consumer_batches_total Batches",
            "# TYPE tocsin_consumer_batches_total counter",
            'tocsin_consumer_batches_total{service="escalation"} 12.0',
            'tocsin_consumer_batches_total{service="other"} 5.0',
            'tocsin_consumer_batches_created{service="escalation"} 1.7e+09',
            "tocsin_correlation_batch_inputs_count 7.0",
        ]
    )
    assert metric_sum(text, "tocsin_consumer_batches_total", {"service": "escalation"}) == 12.0
    assert metric_sum(text, "tocsin_consumer_batches_total") == 17.0
    assert metric_sum(text, "tocsin_correlation_batch_inputs_count") == 7.0
    assert metric_sum(text, "absent") == 0.0


def test_report_divides_by_the_alerts_sent() -> None:
    before = {("alerts.normalized", 0): 10, ("incidents.events", 4): 1}
    after = {("alerts.normalized", 0): 14, ("incidents.events", 4): 13}
    result = report(4, before, after, {"escalation": 2.0}, {"escalation": 6.0, "correlation": 8.0})
    assert result["records"] == 16
    assert result["records_per_alert"] == 4.0
    assert result["records_per_alert_by_topic"] == {
        "alerts.normalized": 1.0,
        "incidents.events": 3.0,
    }
    assert result["batches_per_alert"] == {"correlation": 2.0, "escalation": 1.0}
    with pytest.raises(ValueError, match="alerts: must be at least 1"):
        report(0, before, after)
