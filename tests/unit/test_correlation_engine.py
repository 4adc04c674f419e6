"""Unit tests of correlation: dedup decisions, grouping and the engine, with dicts as tables."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_correlation import grouping
from tocsin_correlation.dedup import AlertState, AlertStatus, Decision, alert_key, decide
from tocsin_correlation.engine import CorrelationEngine, IncidentState, Outcome
from tocsin_correlation.staging import StagedMapping

CONFIG_TEXT = textwrap.dedent(
    """\
    version: 1
    services:
      - id: checkout
        name: Checkout
        escalation_policy: pol
        urgency:
          default: low
          by_severity: {warning: high, error: low}
      - id: content
        name: Content grouped
        escalation_policy: other
        grouping: {mode: content, fields: [labels.alertname], window: 10m}
      - id: timed
        name: Time grouped
        escalation_policy: pol
        grouping: {mode: time, window: 10m}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
    escalation_policies:
      - id: pol
        name: Policy
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
      - id: other
        name: Other
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
    """
)

NOW = 1_800_000_000.0
WINDOW = 600.0  # the 10m window of the grouped services

T = incident_pb2  # short alias for the enum constants
TRIGGERED = T.INCIDENT_EVENT_TYPE_TRIGGERED
ALERT_ADDED = T.INCIDENT_EVENT_TYPE_ALERT_ADDED
ALERT_UPDATED = T.INCIDENT_EVENT_TYPE_ALERT_UPDATED
ACKNOWLEDGED = T.INCIDENT_EVENT_TYPE_ACKNOWLEDGED
RESOLVED = T.INCIDENT_EVENT_TYPE_RESOLVED

ACTIONS = {
    "trigger": alert_pb2.ALERT_ACTION_TRIGGER,
    "acknowledge": alert_pb2.ALERT_ACTION_ACKNOWLEDGE,
    "resolve": alert_pb2.ALERT_ACTION_RESOLVE,
}


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG_TEXT, "tocsin.yaml")


@dataclass
class Tables:
    alerts: dict[str, Any] = field(default_factory=dict)
    incidents: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> CorrelationEngine:
        return CorrelationEngine(self.alerts, self.incidents, self.groups)


@pytest.fixture
def tables() -> Tables:
    return Tables()


@pytest.fixture
def engine(tables: Tables) -> CorrelationEngine:
    return tables.engine()


def make_alert(
    event_id: str,
    *,
    service: str = "checkout",
    key: str = "disk-full",
    action: str = "trigger",
    severity: int = alert_pb2.SEVERITY_CRITICAL,
    summary: str = "Disk full on db-1",
    labels: dict[str, str] | None = None,
) -> alert_pb2.Alert:
    return alert_pb2.Alert(
        event_id=event_id,
        service_id=service,
        dedup_key=key,
        action=ACTIONS[action],
        severity=severity if action == "trigger" else alert_pb2.SEVERITY_UNSPECIFIED,
        summary=summary if action == "trigger" else "",
        labels=labels or {},
    )


def only_event(outcome: Outcome) -> incident_pb2.IncidentEvent:
    assert outcome.dropped is None, outcome.dropped
    assert len(outcome.events) == 1
    return outcome.events[0]


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def command(incident_id: str, command_id: str = "cmd-1", actor: str = "alice", **kind: Any) -> Any:
    return incident_pb2.IncidentCommand(
        command_id=command_id,
        incident_id=incident_id,
        service_id="checkout",
        actor=actor,
        **kind,
    )


# --- dedup.decide ------------------------------------------------------------------------------


def state(status: AlertStatus) -> AlertState:
    return AlertState("a", "i", status, count=1, first_seen=NOW, last_seen=NOW)


@pytest.mark.parametrize(
    ("existing", "action", "expected"),
    [
        (None, "trigger", Decision.NEW),
        (None, "acknowledge", Decision.DROP),
        (None, "resolve", Decision.DROP),
        (AlertStatus.TRIGGERED, "trigger", Decision.DUPLICATE),
        (AlertStatus.TRIGGERED, "acknowledge", Decision.ACKNOWLEDGE),
        (AlertStatus.TRIGGERED, "resolve", Decision.RESOLVE),
        (AlertStatus.ACKNOWLEDGED, "trigger", Decision.DUPLICATE),
        (AlertStatus.ACKNOWLEDGED, "acknowledge", Decision.DROP),
        (AlertStatus.ACKNOWLEDGED, "resolve", Decision.RESOLVE),
        (AlertStatus.RESOLVED, "trigger", Decision.NEW),
        (AlertStatus.RESOLVED, "acknowledge", Decision.DROP),
        (AlertStatus.RESOLVED, "resolve", Decision.DROP),
        (AlertStatus.TRIGGERED, "", Decision.DROP),
        (AlertStatus.TRIGGERED, "explode", Decision.DROP),
    ],
)
def test_decide(existing: AlertStatus | None, action: str, expected: Decision) -> None:
    assert decide(None if existing is None else state(existing), action) is expected


def test_alert_state_json_round_trip() -> None:
    original = AlertState("a1", "i1", AlertStatus.ACKNOWLEDGED, 3, 10.0, 20.5)
    data = json.loads(json.dumps(original.to_json()))
    assert data["status"] == "acknowledged"
    restored = AlertState.from_json(data)
    assert restored == original and restored.status is AlertStatus.ACKNOWLEDGED
    assert original.is_open and not state(AlertStatus.RESOLVED).is_open


def test_alert_key_separates_services() -> None:
    assert alert_key("a", "b") != alert_key("a\x1fb", "")
    assert alert_key("svc", "k").split("\x1f") == ["svc", "k"]


# --- grouping ----------------------------------------------------------------------------------


def test_group_key_modes() -> None:
    one = make_alert("e1", key="k1", labels={"alertname": "Disk", "host": "a"})
    two = make_alert("e2", key="k2", labels={"alertname": "Disk", "host": "b"})
    other = make_alert("e3", key="k3", labels={"alertname": "CPU"})
    fields = ("labels.alertname",)
    assert grouping.group_key(one, "content", fields) == grouping.group_key(two, "content", fields)
    assert grouping.group_key(one, "content", fields) != grouping.group_key(
        other, "content", fields
    )
    assert grouping.group_key(one, "time", ()) == grouping.group_key(other, "time", ())
    assert grouping.group_key(one, "none", ()) != grouping.group_key(two, "none", ())
    assert grouping.field_value(one, "summary") == "Disk full on db-1"
    assert grouping.field_value(one, "labels.missing") == ""


def test_joins_open_incident_window() -> None:
    assert grouping.joins_open_incident(NOW, NOW + WINDOW, WINDOW)
    assert not grouping.joins_open_incident(NOW, NOW + WINDOW + 1, WINDOW)
    assert grouping.joins_open_incident(NOW, NOW + 10**9, None)


# --- triggering and dedup ----------------------------------------------------------------------


def test_trigger_opens_an_incident(engine: CorrelationEngine, tables: Tables, config) -> None:
    alert = make_alert(
        "evt-1", severity=alert_pb2.SEVERITY_WARNING, labels={"alertname": "DiskFull"}
    )
    event = only_event(engine.on_alert(alert, config, NOW))

    assert event.type == TRIGGERED
    assert event.actor == "source"
    assert event.alert == alert
    assert event.at.ToDatetime(tzinfo=UTC) == at(NOW)
    incident = event.incident
    assert incident.incident_id
    assert incident.service_id == "checkout"
    assert incident.title == "Disk full on db-1"
    assert incident.status == T.INCIDENT_STATUS_TRIGGERED
    # warning is overridden to high for this service (the global default would say low).
    assert incident.urgency == T.URGENCY_HIGH
    assert incident.severity == alert_pb2.SEVERITY_WARNING
    assert incident.escalation_policy_id == "pol"
    assert (incident.alert_count, incident.open_alert_count) == (1, 1)
    assert list(incident.dedup_keys) == ["disk-full"]
    assert dict(incident.labels) == {"alertname": "DiskFull"}
    assert incident.created_at.ToDatetime(tzinfo=UTC) == at(NOW)
    assert not incident.HasField("resolved_at")

    key = alert_key("checkout", "disk-full")
    assert tables.alerts[key]["incident_id"] == incident.incident_id
    assert tables.alerts[key]["status"] == "triggered"
    assert tables.alerts[key]["count"] == 1
    assert list(tables.incidents) == [incident.incident_id]
    assert tables.groups == {}  # grouping none: the alert is its own group, kept in no table


def test_table_values_are_plain_json(engine: CorrelationEngine, tables: Tables, config) -> None:
    engine.on_alert(make_alert("e1"), config, NOW)
    engine.on_alert(make_alert("e2", action="acknowledge"), config, NOW + 1)
    for table in (tables.alerts, tables.incidents, tables.groups):
        for value in table.values():
            assert json.loads(json.dumps(value)) == value
    stored = next(iter(tables.incidents.values()))
    assert IncidentState.from_json(stored).to_json() == stored


@pytest.mark.parametrize(
    ("severity", "urgency"),
    [
        (alert_pb2.SEVERITY_CRITICAL, T.URGENCY_HIGH),  # built-in by_severity
        (alert_pb2.SEVERITY_ERROR, T.URGENCY_LOW),  # overridden by the service
        (alert_pb2.SEVERITY_WARNING, T.URGENCY_HIGH),  # overridden by the service
        (alert_pb2.SEVERITY_INFO, T.URGENCY_LOW),  # built-in by_severity
    ],
)
def test_urgency_from_severity(
    engine: CorrelationEngine, config, severity: int, urgency: int
) -> None:
    event = only_event(engine.on_alert(make_alert("e1", severity=severity), config, NOW))
    assert event.incident.urgency == urgency


def test_missing_severity_uses_default_urgency(engine: CorrelationEngine, config) -> None:
    alert = make_alert("e1", severity=alert_pb2.SEVERITY_UNSPECIFIED)
    event = only_event(engine.on_alert(alert, config, NOW))
    assert event.incident.urgency == T.URGENCY_LOW  # checkout's urgency.default


def test_repeat_is_a_duplicate(engine: CorrelationEngine, tables: Tables, config) -> None:
    first = only_event(engine.on_alert(make_alert("e1"), config, NOW))
    second = only_event(engine.on_alert(make_alert("e2"), config, NOW + 30))
    third = only_event(engine.on_alert(make_alert("e3"), config, NOW + 60))

    assert second.type == ALERT_UPDATED and third.type == ALERT_UPDATED
    assert third.incident.incident_id == first.incident.incident_id
    assert "3 times" in third.message
    assert third.incident.alert_count == 1
    assert len(tables.incidents) == 1
    stored = tables.alerts[alert_key("checkout", "disk-full")]
    assert stored["count"] == 3
    assert (stored["first_seen"], stored["last_seen"]) == (NOW, NOW + 60)
    assert len({first.event_id, second.event_id, third.event_id}) == 3


def test_same_key_on_another_service_is_another_alert(engine: CorrelationEngine, config) -> None:
    one = only_event(engine.on_alert(make_alert("e1"), config, NOW))
    two = only_event(engine.on_alert(make_alert("e2", service="timed"), config, NOW))
    assert two.type == TRIGGERED
    assert one.incident.incident_id != two.incident.incident_id


def test_trigger_after_resolve_opens_a_new_incident(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    first = only_event(engine.on_alert(make_alert("e1"), config, NOW))
    resolved = only_event(engine.on_alert(make_alert("e2", action="resolve"), config, NOW + 1))
    assert resolved.type == RESOLVED
    again = only_event(engine.on_alert(make_alert("e3"), config, NOW + 2))
    assert again.type == TRIGGERED
    assert again.incident.incident_id != first.incident.incident_id
    assert len(tables.incidents) == 2
    stored = tables.alerts[alert_key("checkout", "disk-full")]
    assert stored["count"] == 1 and stored["incident_id"] == again.incident.incident_id


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_ack_or_resolve_of_unknown_key_is_dropped(
    engine: CorrelationEngine, tables: Tables, config, action: str
) -> None:
    outcome = engine.on_alert(make_alert("e1", action=action), config, NOW)
    assert outcome.events == []
    assert outcome.dropped == f"{action}_without_open_alert"
    assert tables == Tables()


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_ack_or_resolve_of_resolved_key_is_dropped(
    engine: CorrelationEngine, config, action: str
) -> None:
    engine.on_alert(make_alert("e1"), config, NOW)
    engine.on_alert(make_alert("e2", action="resolve"), config, NOW + 1)
    outcome = engine.on_alert(make_alert("e3", action=action), config, NOW + 2)
    assert outcome.events == [] and outcome.dropped == f"{action}_without_open_alert"


def test_source_acknowledge_acknowledges_the_incident(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    opened = only_event(engine.on_alert(make_alert("e1"), config, NOW))
    acked = only_event(engine.on_alert(make_alert("e2", action="acknowledge"), config, NOW + 5))
    assert acked.type == ACKNOWLEDGED
    assert acked.actor == "source"
    assert acked.incident.incident_id == opened.incident.incident_id
    assert acked.incident.status == T.INCIDENT_STATUS_ACKNOWLEDGED
    assert tables.alerts[alert_key("checkout", "disk-full")]["status"] == "acknowledged"

    # A second acknowledge changes nothing; a repeat trigger is still a duplicate.
    again = engine.on_alert(make_alert("e3", action="acknowledge"), config, NOW + 6)
    assert again.events == [] and again.dropped == "acknowledge_without_open_alert"
    repeat = only_event(engine.on_alert(make_alert("e4"), config, NOW + 7))
    assert repeat.type == ALERT_UPDATED
    assert repeat.incident.status == T.INCIDENT_STATUS_ACKNOWLEDGED


def test_resolving_last_open_alert_resolves_incident_and_frees_group(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    one = only_event(engine.on_alert(make_alert("e1", service="timed", key="a"), config, NOW))
    two = only_event(engine.on_alert(make_alert("e2", service="timed", key="b"), config, NOW + 1))
    assert two.type == ALERT_ADDED
    incident_id = one.incident.incident_id
    assert two.incident.incident_id == incident_id
    assert (two.incident.alert_count, two.incident.open_alert_count) == (2, 2)

    first = engine.on_alert(
        make_alert("e3", service="timed", key="a", action="resolve"), config, NOW + 2
    )
    partial = only_event(first)
    assert partial.type == ALERT_UPDATED
    assert partial.incident.status == T.INCIDENT_STATUS_TRIGGERED
    assert (partial.incident.alert_count, partial.incident.open_alert_count) == (2, 1)
    assert tables.groups  # still taking alerts

    last = only_event(
        engine.on_alert(
            make_alert("e4", service="timed", key="b", action="resolve"), config, NOW + 3
        )
    )
    assert last.type == RESOLVED
    assert last.actor == "source"
    assert last.incident.status == T.INCIDENT_STATUS_RESOLVED
    assert last.incident.open_alert_count == 0
    assert last.incident.resolved_at.ToDatetime(tzinfo=UTC) == at(NOW + 3)
    assert tables.groups == {}

    # The slot is free: the next alert of the service opens a new incident.
    fresh = only_event(engine.on_alert(make_alert("e5", service="timed", key="c"), config, NOW + 4))
    assert fresh.type == TRIGGERED and fresh.incident.incident_id != incident_id


# --- grouping modes through the engine ----------------------------------------------------------


def test_mode_none_opens_one_incident_per_alert(engine: CorrelationEngine, config) -> None:
    one = only_event(engine.on_alert(make_alert("e1", key="a"), config, NOW))
    two = only_event(engine.on_alert(make_alert("e2", key="b"), config, NOW + 1))
    assert one.type == TRIGGERED and two.type == TRIGGERED
    assert one.incident.incident_id != two.incident.incident_id


def content_alert(event_id: str, key: str, alertname: str) -> alert_pb2.Alert:
    return make_alert(
        event_id, service="content", key=key, labels={"alertname": alertname, "host": key}
    )


def test_content_grouping_joins_on_equal_fields(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    first = only_event(engine.on_alert(content_alert("e1", "h1", "DiskFull"), config, NOW))
    joined = only_event(engine.on_alert(content_alert("e2", "h2", "DiskFull"), config, NOW + 60))
    other = only_event(engine.on_alert(content_alert("e3", "h3", "HighCPU"), config, NOW + 61))

    assert first.type == TRIGGERED
    assert first.incident.escalation_policy_id == "other"
    assert joined.type == ALERT_ADDED
    assert joined.incident.incident_id == first.incident.incident_id
    assert list(joined.incident.dedup_keys) == ["h1", "h2"]
    assert "joined" in joined.message
    assert other.type == TRIGGERED
    assert other.incident.incident_id != first.incident.incident_id
    assert tables.alerts[alert_key("content", "h2")]["incident_id"] == first.incident.incident_id
    assert len(tables.incidents) == 2


def test_an_input_changes_the_tables_only_through_its_writes(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    # The worker runs each input on staged views and drops them if the input fails: the
    # incident it read must not change under the table meanwhile (a joined and a resolved
    # alert change the incident's lists).
    engine.on_alert(content_alert("e1", "h1", "DiskFull"), config, NOW)
    engine.on_alert(content_alert("e2", "h2", "DiskFull"), config, NOW + 1)
    before = json.loads(json.dumps(tables.incidents))
    staged = CorrelationEngine(
        StagedMapping(tables.alerts), StagedMapping(tables.incidents), StagedMapping(tables.groups)
    )
    joined = only_event(staged.on_alert(content_alert("e3", "h3", "DiskFull"), config, NOW + 2))
    resolve = make_alert("e4", service="content", key="h1", action="resolve")
    updated = only_event(staged.on_alert(resolve, config, NOW + 3))

    assert joined.type == ALERT_ADDED and updated.incident.open_alert_count == 2
    assert tables.incidents == before


def test_content_grouping_window_expiry_opens_new_incident(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    first = only_event(engine.on_alert(content_alert("e1", "h1", "DiskFull"), config, NOW))
    at_edge = only_event(
        engine.on_alert(content_alert("e2", "h2", "DiskFull"), config, NOW + WINDOW)
    )
    late = only_event(
        engine.on_alert(content_alert("e3", "h3", "DiskFull"), config, NOW + WINDOW + 1)
    )
    assert at_edge.type == ALERT_ADDED
    assert at_edge.incident.incident_id == first.incident.incident_id
    assert late.type == TRIGGERED
    assert late.incident.incident_id != first.incident.incident_id
    # The old incident stays open with its alerts; the group now feeds the new one.
    old = IncidentState.from_json(tables.incidents[first.incident.incident_id])
    assert old.status == "triggered" and len(old.open_alert_keys) == 2
    assert list(tables.groups.values()) == [late.incident.incident_id]


def test_time_grouping_joins_any_alert_within_window(engine: CorrelationEngine, config) -> None:
    def timed(event_id: str, key: str, name: str) -> alert_pb2.Alert:
        return make_alert(event_id, service="timed", key=key, labels={"alertname": name})

    first = only_event(engine.on_alert(timed("e1", "a", "Disk"), config, NOW))
    joined = only_event(engine.on_alert(timed("e2", "b", "CPU"), config, NOW + WINDOW))
    late = only_event(engine.on_alert(timed("e3", "c", "Memory"), config, NOW + WINDOW + 1))
    assert joined.type == ALERT_ADDED
    assert joined.incident.incident_id == first.incident.incident_id
    assert late.type == TRIGGERED
    assert late.incident.incident_id != first.incident.incident_id


# --- commands ---------------------------------------------------------------------------------


@pytest.fixture
def incident_id(engine: CorrelationEngine, config) -> str:
    return only_event(engine.on_alert(make_alert("e1"), config, NOW)).incident.incident_id


def test_command_acknowledge(engine: CorrelationEngine, incident_id: str) -> None:
    ack = command(incident_id, acknowledge=incident_pb2.AcknowledgeCommand())
    event = only_event(engine.on_command(ack, NOW + 10))
    assert event.type == ACKNOWLEDGED
    assert event.actor == "alice" and event.command_id == "cmd-1"
    assert event.incident.status == T.INCIDENT_STATUS_ACKNOWLEDGED
    assert not event.HasField("alert")
    assert event.at.ToDatetime(tzinfo=UTC) == at(NOW + 10)

    again = engine.on_command(command(incident_id, "cmd-2", acknowledge={}), NOW + 11)
    assert again.events == [] and again.dropped == "already_acknowledged"


def test_command_resolve(engine: CorrelationEngine, tables: Tables, config, incident_id) -> None:
    event = only_event(engine.on_command(command(incident_id, resolve={}), NOW + 10))
    assert event.type == RESOLVED
    assert event.actor == "alice" and "alice" in event.message
    assert event.incident.status == T.INCIDENT_STATUS_RESOLVED
    assert event.incident.open_alert_count == 0
    assert tables.alerts[alert_key("checkout", "disk-full")]["status"] == "resolved"
    assert tables.groups == {}

    for later in (
        command(incident_id, "c2", acknowledge={}),
        command(incident_id, "c3", resolve={}),
        command(incident_id, "c4", snooze={"until": {"seconds": int(NOW) + 3600}}),
    ):
        outcome = engine.on_command(later, NOW + 20)
        assert outcome.events == [] and outcome.dropped == "incident_resolved"
    # A note is still welcome on a resolved incident.
    note = only_event(engine.on_command(command(incident_id, "c5", note={"text": "RCA"}), NOW))
    assert note.type == T.INCIDENT_EVENT_TYPE_NOTE_ADDED
    # And the alert's source re-triggering opens a new incident.
    fresh = only_event(engine.on_alert(make_alert("e9"), config, NOW + 30))
    assert fresh.type == TRIGGERED and fresh.incident.incident_id != incident_id


def test_command_note(engine: CorrelationEngine, incident_id: str) -> None:
    cmd = command(incident_id, note=incident_pb2.NoteCommand(text="restarted db-1"))
    event = only_event(engine.on_command(cmd, NOW + 10))
    assert event.type == T.INCIDENT_EVENT_TYPE_NOTE_ADDED
    assert event.message == "restarted db-1"
    assert event.actor == "alice"
    assert event.incident.status == T.INCIDENT_STATUS_TRIGGERED


def test_command_status_update_is_on_the_timeline_with_what_was_posted(
    engine: CorrelationEngine, incident_id: str
) -> None:
    update = incident_pb2.PublicStatusUpdate(
        status="identified",
        message="Card payments fail; a fix is rolling out.",
        public_title="Payments",
    )
    event = only_event(engine.on_command(command(incident_id, status_update=update), NOW + 10))
    assert event.type == T.INCIDENT_EVENT_TYPE_STATUS_UPDATED
    assert event.status_update == update
    assert event.actor == "alice"
    assert "identified" in event.message and "fix is rolling out" in event.message
    assert event.incident.status == T.INCIDENT_STATUS_TRIGGERED  # the incident itself is unchanged
    # A follow-up still goes on after the incident is resolved.
    engine.on_command(command(incident_id, "c2", resolve={}), NOW + 20)
    follow = incident_pb2.PublicStatusUpdate(status="resolved", message="Fixed.")
    later = only_event(
        engine.on_command(command(incident_id, "c3", status_update=follow), NOW + 30)
    )
    assert later.type == T.INCIDENT_EVENT_TYPE_STATUS_UPDATED


def test_a_timeline_entry_cannot_pose_as_a_status_update(
    engine: CorrelationEngine, incident_id: str
) -> None:
    entry = incident_pb2.TimelineEntryCommand(
        type=T.INCIDENT_EVENT_TYPE_STATUS_UPDATED, message="forged"
    )
    outcome = engine.on_command(command(incident_id, timeline_entry=entry), NOW + 10)
    assert outcome.events == [] and outcome.dropped == "timeline_entry_reserved_type"


def test_command_set_impact_changes_the_incident_until_cleared(
    engine: CorrelationEngine, incident_id: str
) -> None:
    set_it = command(incident_id, "c1", set_impact={"impact": "major_outage"})
    event = only_event(engine.on_command(set_it, NOW + 10))
    assert event.type == T.INCIDENT_EVENT_TYPE_IMPACT_CHANGED
    assert event.incident.impact == "major_outage" and event.actor == "alice"
    assert event.message == "public impact set to major_outage by alice"
    # Every later event carries it (the read side and the page read it from there).
    note = only_event(engine.on_command(command(incident_id, "c2", note={"text": "x"}), NOW + 11))
    assert note.incident.impact == "major_outage"
    again = engine.on_command(
        command(incident_id, "c3", set_impact={"impact": "major_outage"}), NOW
    )
    assert again.events == [] and again.dropped == "impact_unchanged"
    bogus = engine.on_command(command(incident_id, "c4", set_impact={"impact": "on_fire"}), NOW)
    assert bogus.events == [] and bogus.dropped == "unknown_impact"
    cleared = only_event(engine.on_command(command(incident_id, "c5", set_impact={}), NOW + 20))
    assert cleared.incident.impact == "" and "follows the urgency" in cleared.message
    forged = incident_pb2.TimelineEntryCommand(
        type=T.INCIDENT_EVENT_TYPE_IMPACT_CHANGED, message="forged"
    )
    outcome = engine.on_command(command(incident_id, "c6", timeline_entry=forged), NOW + 30)
    assert outcome.dropped == "timeline_entry_reserved_type"
    engine.on_command(command(incident_id, "c7", resolve={}), NOW + 40)
    late = engine.on_command(
        command(incident_id, "c8", set_impact={"impact": "partial_outage"}), NOW
    )
    assert late.dropped == "incident_resolved"


def test_command_reassign_to_policy_and_user(engine: CorrelationEngine, incident_id) -> None:
    engine.on_command(command(incident_id, "c0", acknowledge={}), NOW + 1)
    to_policy = command(incident_id, "c1", reassign={"escalation_policy_id": "other"})
    event = only_event(engine.on_command(to_policy, NOW + 10))
    assert event.type == T.INCIDENT_EVENT_TYPE_REASSIGNED
    assert event.incident.escalation_policy_id == "other"
    assert event.incident.status == T.INCIDENT_STATUS_TRIGGERED  # escalation starts over
    assert "other" in event.message

    to_user = command(incident_id, "c2", reassign={"user_id": "bob"})
    event = only_event(engine.on_command(to_user, NOW + 20))
    assert event.incident.assigned_user_id == "bob"
    assert event.incident.escalation_policy_id == "other"
    assert "user:bob" in event.message


def test_command_snooze(engine: CorrelationEngine, tables: Tables, incident_id: str) -> None:
    until = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
    cmd = command(incident_id, snooze={})
    cmd.snooze.until.FromDatetime(until)
    event = only_event(engine.on_command(cmd, NOW + 10))
    assert event.type == T.INCIDENT_EVENT_TYPE_SNOOZED
    assert event.incident.status == T.INCIDENT_STATUS_ACKNOWLEDGED
    assert event.incident.snoozed_until.ToDatetime(tzinfo=UTC) == until
    assert tables.incidents[incident_id]["snoozed_until"] == until.timestamp()


def test_command_for_unknown_incident_is_dropped(engine: CorrelationEngine) -> None:
    outcome = engine.on_command(command("no-such-incident", acknowledge={}), NOW)
    assert outcome.events == [] and outcome.dropped == "unknown_incident"


def test_command_without_a_kind_is_dropped(engine: CorrelationEngine, incident_id: str) -> None:
    outcome = engine.on_command(command(incident_id), NOW)
    assert outcome.events == [] and outcome.dropped is not None


# --- determinism, unknown services, lost state ---------------------------------------------------


def test_ids_are_derived_from_the_input(config) -> None:
    first, second = Tables().engine(), Tables().engine()
    one = only_event(first.on_alert(make_alert("evt-42"), config, NOW))
    two = only_event(second.on_alert(make_alert("evt-42"), config, NOW + 5))
    assert one.incident.incident_id == two.incident.incident_id
    assert one.event_id == two.event_id

    other = only_event(Tables().engine().on_alert(make_alert("evt-43"), config, NOW))
    assert other.incident.incident_id != one.incident.incident_id
    assert other.event_id != one.event_id


def test_command_event_ids_are_derived_from_the_command(config) -> None:
    ids = []
    for _ in range(2):
        engine = Tables().engine()
        incident = only_event(engine.on_alert(make_alert("e1"), config, NOW)).incident
        event = only_event(engine.on_command(command(incident.incident_id, "cmd-7", note={}), NOW))
        ids.append(event.event_id)
    assert ids[0] == ids[1]


def test_unknown_service_is_dropped(engine: CorrelationEngine, tables: Tables, config) -> None:
    outcome = engine.on_alert(make_alert("e1", service="retired"), config, NOW)
    assert outcome.events == [] and outcome.dropped == "unknown_service"
    assert tables == Tables()


def test_alert_whose_incident_and_group_vanished_starts_afresh(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    lost = only_event(engine.on_alert(make_alert("e1"), config, NOW)).incident.incident_id
    tables.incidents.clear()
    tables.groups.clear()

    # Acknowledge/resolve of an alert whose incident is gone changes nothing and does not fail.
    assert engine.on_alert(make_alert("e2", action="resolve"), config, NOW + 1).events == []
    event = only_event(engine.on_alert(make_alert("e3"), config, NOW + 2))
    assert event.type == TRIGGERED
    assert event.incident.incident_id != lost
    assert tables.alerts[alert_key("checkout", "disk-full")]["incident_id"] == (
        event.incident.incident_id
    )


def test_alert_whose_incident_vanished_starts_afresh(
    engine: CorrelationEngine, tables: Tables, config
) -> None:
    lost = only_event(engine.on_alert(make_alert("e1"), config, NOW)).incident.incident_id
    del tables.incidents[lost]  # the group slot still names it

    event = only_event(engine.on_alert(make_alert("e2"), config, NOW + 1))
    assert event.type == TRIGGERED
    assert event.incident.incident_id != lost


def test_a_full_incident_takes_no_more_alerts_the_group_opens_another() -> None:
    bounded = parse_config(
        CONFIG_TEXT.replace(
            "grouping: {mode: content, fields: [labels.alertname], window: 10m}",
            "grouping: {mode: content, fields: [labels.alertname], window: 10m, max_alerts: 2}",
        ),
        "tocsin.yaml",
    )
    engine = Tables().engine()
    events = [
        only_event(engine.on_alert(content_alert(f"e{i}", f"h{i}", "DiskFull"), bounded, NOW + i))
        for i in range(5)
    ]

    assert [e.type for e in events] == [TRIGGERED, ALERT_ADDED, TRIGGERED, ALERT_ADDED, TRIGGERED]
    first, _, second, joined, third = events
    assert list(joined.incident.dedup_keys) == ["h2", "h3"]
    assert joined.incident.incident_id == second.incident.incident_id != first.incident.incident_id
    assert third.incident.incident_id not in (
        first.incident.incident_id,
        second.incident.incident_id,
    )


def test_command_priority_sets_it_says_what_changed_and_ignores_a_repeat(
    engine: CorrelationEngine, incident_id: str
) -> None:
    first = only_event(
        engine.on_command(command(incident_id, "p1", priority={"priority": "P2"}), NOW + 5)
    )
    assert first.type == T.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED
    assert first.incident.priority == "P2" and first.command_id == "p1"
    assert first.message == "priority changed to P2 by alice"
    again = engine.on_command(command(incident_id, "p2", priority={"priority": "P2"}), NOW + 6)
    assert again.events == [] and again.dropped == "priority_unchanged"
    raised = only_event(
        engine.on_command(
            command(incident_id, "p3", "automation:bump", priority={"priority": "P1"}), NOW + 7
        )
    )
    assert raised.message == "priority changed from P2 to P1 by automation:bump"
    # It stays with the incident: the next event carries it.
    ack = only_event(engine.on_command(command(incident_id, "a1", acknowledge={}), NOW + 8))
    assert ack.incident.priority == "P1"
    # Resolved incidents still take it (a review may set it afterwards).
    engine.on_command(command(incident_id, "r1", resolve={}), NOW + 9)
    late = only_event(
        engine.on_command(command(incident_id, "p4", priority={"priority": "P3"}), NOW + 10)
    )
    assert late.incident.priority == "P3"
    empty = engine.on_command(command(incident_id, "p5", priority={}), NOW + 11)
    assert empty.dropped == "priority_empty"


def test_another_service_cannot_write_a_priority_change_as_a_timeline_entry(
    engine: CorrelationEngine, incident_id: str
) -> None:
    entry = {"type": T.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED, "message": "P1"}
    outcome = engine.on_command(command(incident_id, "t1", timeline_entry=entry), NOW + 5)
    assert outcome.dropped == "timeline_entry_reserved_type"
