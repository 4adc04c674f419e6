"""The incident fact as a pure fold of its events; notification and change facts; the
decoding of polled records into one batch (dead letters included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common.config import Insight
from tocsin_insight.domain.interruptions import hour_class
from tocsin_insight.facts import (
    MAX_LABEL_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    Directory,
    FactError,
    IncidentFact,
    capped_labels,
    change_fact,
    fold_incident,
    is_person,
    notification_fact,
    suppression_kind,
)
from tocsin_insight.ingest import decode

E = incident_pb2
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INSIGHT = Insight.model_validate(
    {
        "priorities": [
            {"id": "P1", "matchers": ['priority="P1"']},
            {"id": "P1", "severities": ["critical"], "urgencies": ["high"]},
            {"id": "P2", "severities": ["error", "critical"]},
            {"id": "P3", "services": ["checkout"]},
        ]
    }
)
DIRECTORY = Directory(
    team_of=lambda s: {"checkout": "payments"}.get(s, ""),
    zone_of=lambda u: {"ana": "Europe/Paris"}.get(u, "UTC"),
    priority_of=lambda service, severity, urgency, labels: (
        INSIGHT.priority_for(service, severity, urgency, labels) or ""
    ),
)


def event(
    kind: int,
    seconds: float,
    *,
    event_id: str = "",
    actor: str = "source",
    message: str = "",
    status: int = E.INCIDENT_STATUS_TRIGGERED,
    incident_id: str = "inc-1",
    alert_count: int = 1,
    severity: int = alert_pb2.SEVERITY_CRITICAL,
    labels: dict[str, str] | None = None,
    suppressed: bool = False,
    suppressed_reason: str = "",
    snoozed_until: datetime | None = None,
    held_by: str = "",
) -> incident_pb2.IncidentEvent:
    e = incident_pb2.IncidentEvent(
        event_id=event_id or f"{incident_id}-{kind}-{seconds}",
        type=kind,  # type: ignore[arg-type]
        actor=actor,
        message=message,
    )
    e.at.FromDatetime(T0 + timedelta(seconds=seconds))
    i = e.incident
    i.incident_id = incident_id
    i.service_id = "checkout"
    i.title = "checkout 5xx"
    i.status = status  # type: ignore[assignment]
    i.urgency = E.URGENCY_HIGH
    i.severity = severity  # type: ignore[assignment]
    i.group_key = "g1"
    i.alert_count = alert_count
    i.created_at.FromDatetime(T0)
    i.suppressed = suppressed
    i.suppressed_reason = suppressed_reason
    i.held_by_incident_id = held_by
    for k, v in (labels or {}).items():
        i.labels[k] = v
    if snoozed_until is not None:
        i.snoozed_until.FromDatetime(snoozed_until)
    e.alert.dedup_key = "disk-full"
    e.alert.source = "prometheus"
    return e


def fold_all(*events: incident_pb2.IncidentEvent) -> IncidentFact:
    fact: IncidentFact | None = None
    for e in events:
        fact = fold_incident(fact, e, DIRECTORY)
    assert fact is not None
    return fact


def test_a_story_acknowledged_after_90s_escalated_once_and_resolved_by_a_person() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(
            E.INCIDENT_EVENT_TYPE_ESCALATED,
            1,
            actor="system",
            message="escalated to level 1: paged ana",
        ),
        event(
            E.INCIDENT_EVENT_TYPE_ESCALATED,
            60,
            actor="system",
            message="escalated to level 2: paged bob",
        ),
        event(E.INCIDENT_EVENT_TYPE_ALERT_ADDED, 70, alert_count=2),
        event(
            E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
            90,
            actor="bob",
            status=E.INCIDENT_STATUS_ACKNOWLEDGED,
            alert_count=2,
        ),
        event(
            E.INCIDENT_EVENT_TYPE_RESOLVED,
            600,
            actor="bob",
            status=E.INCIDENT_STATUS_RESOLVED,
            alert_count=2,
        ),
    )
    assert fact.service_id == "checkout" and fact.team_id == "payments"
    assert fact.severity == "critical" and fact.priority == "P1" and fact.urgency == "high"
    assert fact.seconds_to_first_ack == 90 and fact.first_ack_by == "bob"
    assert fact.seconds_to_resolve == 600 and fact.resolved_by == "bob"
    assert not fact.auto_resolved
    assert fact.first_engaged_at == T0 + timedelta(seconds=90)
    assert fact.engaged_users == ("bob",) and fact.seconds_to_engage is None  # one person
    assert fact.escalation_count == 2 and fact.max_level == 2
    assert fact.alert_count == 2 and fact.event_count == 6
    assert fact.status == "resolved"
    assert fact.source == "prometheus" and fact.dedup_key == "disk-full"


def test_resolved_by_the_source_is_auto_resolved_and_engages_nobody() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 5, actor="source"),
        event(E.INCIDENT_EVENT_TYPE_RESOLVED, 50, actor="source"),
    )
    assert fact.auto_resolved and fact.resolved_by == "source"
    assert fact.first_engaged_at is None
    assert fact.seconds_to_first_ack == 5  # an acknowledgement all the same


def test_only_the_first_ack_and_resolve_count() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 30, actor="ana"),
        event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, 330, actor="system"),
        event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 400, actor="bob"),
    )
    assert fact.seconds_to_first_ack == 30 and fact.first_ack_by == "ana"
    # Engagement: each person's first acknowledgement; engage = first person to last.
    assert fact.engaged_users == ("ana", "bob")
    assert fact.seconds_to_engage == 370
    assert fact.last_engaged_at == T0 + timedelta(seconds=400)


def test_notes_and_a_person_acking_again_are_not_new_engagements() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_NOTE_ADDED, 20, actor="ana"),
        event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 45, actor="bob"),
        event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, 100, actor="system"),
        event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 120, actor="bob"),
    )
    assert fact.first_engaged_at == T0 + timedelta(seconds=45)
    assert fact.engaged_users == ("bob",) and fact.last_engaged_at == fact.first_engaged_at


def test_snooze_counts_its_used_time_when_ended_early_and_its_whole_time_otherwise() -> None:
    until = T0 + timedelta(seconds=100 + 3600)
    snoozed = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_SNOOZED, 100, actor="ana", snoozed_until=until),
        event(E.INCIDENT_EVENT_TYPE_RESOLVED, 100 + 600, actor="ana"),
    )
    assert snoozed.snoozed_seconds == 600 and snoozed.snoozed_since is None
    ran = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_SNOOZED, 100, actor="ana", snoozed_until=until),
        # the snooze ended by itself: the next event comes after until
        event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, 100 + 3700, actor="system"),
    )
    assert ran.snoozed_seconds == 3600


def test_reassignments_are_counted() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_REASSIGNED, 10, actor="ana"),
        event(E.INCIDENT_EVENT_TYPE_REASSIGNED, 20, actor="bob"),
    )
    assert fact.reassignments == 2 and fact.engaged_users == ()


def test_suppressed_incident_counts_its_alerts_and_the_kind() -> None:
    fact = fold_all(
        event(
            E.INCIDENT_EVENT_TYPE_SUPPRESSED,
            0,
            suppressed=True,
            suppressed_reason="maintenance window 2026-03-02T08:00 to 10:00 (db upgrade)",
        ),
        event(
            E.INCIDENT_EVENT_TYPE_ALERT_ADDED,
            5,
            suppressed=True,
            alert_count=2,
            suppressed_reason="maintenance window",
        ),
    )
    assert fact.suppressed and fact.suppression_kind == "maintenance"
    assert fact.suppressed_alerts == 2 and fact.alert_count == 2


def test_held_and_flapping_are_remembered() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_HELD, 0, held_by="inc-up"),
        event(E.INCIDENT_EVENT_TYPE_RELEASED, 30),
    )
    assert fact.held


@pytest.mark.parametrize(
    ("labels", "severity", "priority"),
    [
        ({}, alert_pb2.SEVERITY_CRITICAL, "P1"),  # critical and high urgency
        ({}, alert_pb2.SEVERITY_ERROR, "P2"),
        ({}, alert_pb2.SEVERITY_WARNING, "P3"),  # the service's rule
        ({"priority": "P1"}, alert_pb2.SEVERITY_INFO, "P1"),  # the label's matcher
    ],
)
def test_priority_is_the_first_matching_rule_of_the_config(
    labels: dict[str, str], severity: int, priority: str
) -> None:
    fact = fold_all(event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, labels=labels, severity=severity))
    assert fact.priority == priority


def test_no_matching_rule_leaves_the_priority_empty() -> None:
    e = event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, severity=alert_pb2.SEVERITY_INFO)
    e.incident.service_id = "web"
    assert fold_incident(None, e, DIRECTORY).priority == ""


def test_held_incidents_are_suppressed_by_dependency() -> None:
    fact = fold_all(event(E.INCIDENT_EVENT_TYPE_HELD, 0, held_by="inc-up"))
    assert fact.held and fact.suppression_kind == "dependency"


def test_impact_from_the_label_runs_until_resolution() -> None:
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, labels={"impact": "Partial"}),
        event(E.INCIDENT_EVENT_TYPE_RESOLVED, 300, actor="ana", labels={"impact": "partial"}),
    )
    assert fact.impact == "partial"
    assert fact.impact_start == T0 and fact.impact_end == T0 + timedelta(seconds=300)
    plain = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(E.INCIDENT_EVENT_TYPE_RESOLVED, 300, actor="ana"),
    )
    assert plain.impact == "" and plain.impact_end is None


def test_linked_changes_from_probable_causes() -> None:
    e = event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0)
    cause = e.incident.probable_causes.add(rank=1, reason="same service, 4 min before")
    cause.change.event_id = "chg-1"
    assert fold_all(e).linked_changes == ("chg-1",)


def test_a_fold_refuses_an_event_of_another_incident_or_without_a_time() -> None:
    fact = fold_all(event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0))
    other = event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 1, incident_id="x")
    with pytest.raises(FactError, match=r"incident\.incident_id"):
        fold_incident(fact, other, DIRECTORY)
    untimed = event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, 1)
    untimed.ClearField("at")
    with pytest.raises(FactError, match="at: is not set"):
        fold_incident(fact, untimed, DIRECTORY)


def test_people_and_machines() -> None:
    assert is_person("ana") and not is_person("source") and not is_person("system")
    assert not is_person("service:escalation") and not is_person("correlation")


def test_suppression_kinds() -> None:
    assert suppression_kind("silenced by silence s-1 (deploy)") == "silence"
    assert suppression_kind("inhibited by checkout-down") == "inhibition"
    assert suppression_kind("") == ""


def test_notification_fact_in_the_person_zone() -> None:
    status = notification_pb2.NotificationStatus(
        request_id="r1",
        incident_id="inc-1",
        user_id="ana",
        channel="sms",
        outcome=notification_pb2.DELIVERY_OUTCOME_DELIVERED,
        attempt=1,
    )
    status.at.FromDatetime(datetime(2026, 7, 1, 21, 30, tzinfo=UTC))
    fact = notification_fact(status, DIRECTORY, hour_class=hour_class)
    assert fact.delivered and fact.channel == "sms" and fact.time_zone == "Europe/Paris"
    assert fact.local_at == datetime(2026, 7, 1, 23, 30)  # CEST
    assert fact.hour_class == "sleep"  # 23:30 in Paris
    with pytest.raises(FactError, match="request_id"):
        notification_fact(notification_pb2.NotificationStatus(), DIRECTORY)


def test_change_fact() -> None:
    change = alert_pb2.ChangeEvent(event_id="c1", service_id="checkout", summary="deploy v42")
    change.timestamp.FromDatetime(T0)
    fact = change_fact(change, DIRECTORY)
    assert fact.team_id == "payments" and fact.at == T0
    with pytest.raises(FactError, match="timestamp"):
        change_fact(alert_pb2.ChangeEvent(event_id="c2"), DIRECTORY)
    assert (fact.change_id, fact.kind, fact.status, fact.version) == (
        "",
        "unspecified",
        "unspecified",
        "",
    )


def test_change_fact_keeps_the_lifecycle_fields() -> None:
    change = alert_pb2.ChangeEvent(
        event_id="c3",
        service_id="checkout",
        change_id="deploy-7",
        kind=alert_pb2.CHANGE_KIND_ROLLBACK,
        status=alert_pb2.CHANGE_STATUS_STARTED,
        version="1.4.2",
        environment="production",
        rollback_of="deploy-6",
    )
    change.timestamp.FromDatetime(T0)
    fact = change_fact(change, DIRECTORY)
    assert (fact.change_id, fact.kind, fact.status, fact.version, fact.environment) == (
        "deploy-7",
        "rollback",
        "started",
        "1.4.2",
        "production",
    )
    assert fact.rollback_of == "deploy-6"


def record(topic: str, offset: int, value: bytes | None, partition: int = 0) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value or b""),
        headers=[("h", b"v")],
    )


def test_decode_makes_one_batch_and_dead_letters_what_it_cannot_read() -> None:
    good = event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0).SerializeToString()
    no_id = incident_pb2.IncidentEvent(event_id="e-x").SerializeToString()
    status = notification_pb2.NotificationStatus(request_id="r1", user_id="ana")
    status.at.FromDatetime(T0)
    change = alert_pb2.ChangeEvent(event_id="c1", service_id="checkout")
    change.timestamp.FromDatetime(T0)
    decoded = decode(
        [
            record("incidents.events", 10, good),
            record("incidents.events", 11, b"\xff\xff not a protobuf"),
            record("incidents.events", 12, no_id),
            record("incidents.events", 3, good, partition=4),
            record("notifications.status", 7, status.SerializeToString()),
            record("changes", 2, change.SerializeToString()),
            record("changes", 3, None),
        ],
        DIRECTORY,
    )
    batch = decoded.batch
    assert len(batch.events) == 2 and len(batch.notifications) == 1 and len(batch.changes) == 1
    assert [(d.topic, d.offset) for d in batch.dead] == [
        ("incidents.events", 11),
        ("incidents.events", 12),
        ("changes", 3),
    ]
    assert batch.dead[0].value == b"\xff\xff not a protobuf" and batch.dead[0].headers == {"h": "v"}
    assert "DecodeError" in batch.dead[0].reason
    assert "incident.incident_id" in batch.dead[1].reason
    # Offsets move past every record, dead ones included: the next to read per partition.
    assert batch.offsets == {
        ("incidents.events", 0): 13,
        ("incidents.events", 4): 4,
        ("notifications.status", 0): 8,
        ("changes", 0): 4,
    }
    assert len(decoded.dead_records) == 3


def _entry(kind: int, seconds: float, message: str, **kw: object) -> incident_pb2.IncidentEvent:
    """An entry as escalation puts it on incidents.timeline: no alert, its incident as
    escalation saw it."""
    e = event(kind, seconds, actor="system", message=message, **kw)  # type: ignore[arg-type]
    e.ClearField("alert")
    return e


def test_a_level_reached_folded_before_the_trigger_still_gives_the_opening_alert() -> None:
    # incidents.timeline and incidents.events are read in no order relative to each other.
    fact = fold_all(
        _entry(E.INCIDENT_EVENT_TYPE_ESCALATED, 1, "escalated to level 1: paged ana"),
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
    )
    assert fact.source == "prometheus" and fact.dedup_key == "disk-full"
    assert fact.created_at == T0 and fact.status == "triggered"
    assert fact.escalation_count == 1 and fact.max_level == 1


def test_a_level_reached_folded_after_an_acknowledgement_leaves_the_status() -> None:
    # Escalation decided level 2 on a triggered incident; correlation's acknowledgement was
    # folded first: the entry's older snapshot must not make it triggered again.
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0),
        event(
            E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
            50,
            actor="ana",
            status=E.INCIDENT_STATUS_ACKNOWLEDGED,
        ),
        _entry(E.INCIDENT_EVENT_TYPE_ESCALATED, 49, "escalated to level 2: paged bob"),
    )
    assert fact.status == "acknowledged" and fact.max_level == 2
    assert fact.updated_at == T0 + timedelta(seconds=50)


def test_decode_reads_incidents_timeline_as_incident_events() -> None:
    entry = _entry(E.INCIDENT_EVENT_TYPE_ESCALATED, 1, "escalated to level 1: paged ana")
    decoded = decode([record("incidents.timeline", 5, entry.SerializeToString())], DIRECTORY)
    assert [r.event.event_id for r in decoded.batch.events] == [entry.event_id]
    assert decoded.batch.offsets == {("incidents.timeline", 0): 6} and not decoded.batch.dead


def test_labels_of_the_opening_alert_are_kept_capped() -> None:
    """Definitions v4: the labels an automation rule's matchers see (the dry run), capped as
    alert-ingest caps them (SPEC §10)."""
    fact = fold_all(
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, labels={"alertname": "OOMKilled", "pod": "a"}),
        event(E.INCIDENT_EVENT_TYPE_RESOLVED, 60, actor="ana", labels={"alertname": "Other"}),
    )
    assert fact.labels == (("alertname", "OOMKilled"), ("pod", "a"))
    # an entry folded first without labels does not stop the opening alert's from counting
    late = fold_all(
        event(E.INCIDENT_EVENT_TYPE_ESCALATED, 1, message="escalated to level 1"),
        event(E.INCIDENT_EVENT_TYPE_TRIGGERED, 0, labels={"alertname": "OOMKilled"}),
    )
    assert late.labels == (("alertname", "OOMKilled"),)
    many = {f"l{n:03d}": "v" for n in range(MAX_LABELS + 10)}
    many["a-too-long"] = "x" * (MAX_LABEL_VALUE + 1)
    many["b" * (MAX_LABEL_NAME + 1)] = "v"
    kept = capped_labels(many)
    assert len(kept) == MAX_LABELS and kept[0] == ("l000", "v")
    assert all(len(v) <= MAX_LABEL_VALUE and len(k) <= MAX_LABEL_NAME for k, v in kept)
