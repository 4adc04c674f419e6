"""Unit tests of correlation's noise reduction: matchers, silences, maintenance, inhibition,
flapping (Nagios' worked examples), change ranking, dependency hold/release, and the
unacknowledge and timeline_entry commands — with dicts as tables."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin.v1 import silence_service_pb2 as spb
from tocsin_common.config import ConfigError, TocsinConfig, parse_config
from tocsin_correlation.changes import (
    MAX_CAUSES_BYTES,
    ChangeRecord,
    add_change,
    probable_causes,
)
from tocsin_correlation.engine import SELF_ACTOR, CorrelationEngine, OpenIncident, View
from tocsin_correlation.flapping import FlapState, percent_state_change
from tocsin_correlation.matchers import MatcherError, alert_labels, parse_matchers
from tocsin_correlation.silences import Silence, matchers_from_proto, silencing

T = incident_pb2
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

CONFIG = textwrap.dedent(
    """\
    version: 1
    services:
      - id: db
        name: Database
        escalation_policy: pol
      - id: api
        name: API
        escalation_policy: pol
        depends_on: [db]
        change_lookback: 30m
        inhibit_rules:
          - source_matchers: ['alertname="NodeDown"']
            target_matchers: ['severity=~"warning|error"']
            equal: [host]
      - id: web
        name: Web
        escalation_policy: pol
        depends_on: [api]
        maintenance_windows:
          - {start: "2027-01-15T07:00:00Z", end: "2027-01-15T09:00:00Z", description: upgrade}
      - id: twitchy
        name: Twitchy
        escalation_policy: pol
        flapping: {high_threshold: 20, low_threshold: 10}
      - id: unflapped
        name: Unflapped
        escalation_policy: pol
        flapping: {enabled: false}
    users:
      - {id: alice, name: Alice, email: alice@example.com}
    escalation_policies:
      - id: pol
        name: Policy
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


@pytest.fixture
def engine() -> CorrelationEngine:
    return CorrelationEngine({}, {}, {}, {}, {}, {})


SEVERITY = {
    "critical": alert_pb2.SEVERITY_CRITICAL,
    "error": alert_pb2.SEVERITY_ERROR,
    "warning": alert_pb2.SEVERITY_WARNING,
    "info": alert_pb2.SEVERITY_INFO,
}
ACTION = {
    "trigger": alert_pb2.ALERT_ACTION_TRIGGER,
    "resolve": alert_pb2.ALERT_ACTION_RESOLVE,
    "acknowledge": alert_pb2.ALERT_ACTION_ACKNOWLEDGE,
}


def alert(
    event_id: str,
    service: str = "api",
    key: str = "k1",
    action: str = "trigger",
    severity: str = "critical",
    **labels: str,
) -> alert_pb2.Alert:
    return alert_pb2.Alert(
        event_id=event_id,
        service_id=service,
        dedup_key=key,
        action=ACTION[action],
        severity=SEVERITY[severity],
        summary=f"{key} broken",
        labels=labels,
    )


def types(outcome: Any) -> list[int]:
    return [e.type for e in outcome.events]


def cmd(incident_id: str, command_id: str, actor: str = "alice", **kind: Any) -> Any:
    return incident_pb2.IncidentCommand(
        command_id=command_id, incident_id=incident_id, service_id="api", actor=actor, **kind
    )


# --- matchers and silences ---------------------------------------------------------------


def test_parse_matchers_brace_and_list_forms() -> None:
    braced = parse_matchers('{alertname="X", severity=~"warn|info"}')
    assert [str(m) for m in braced] == ['alertname="X"', 'severity=~"warn|info"']
    listed = parse_matchers(['alertname="X"', 'severity=~"warn|info"'])
    assert listed == braced
    # A comma inside quotes is part of the value.
    assert parse_matchers('{msg="a,b", x!~"y"}')[0].value == "a,b"
    labels = {"alertname": "X", "severity": "warn"}
    assert all(m.matches(labels) for m in braced)
    assert not braced[1].matches({"severity": "warning"})  # anchored regex


@pytest.mark.parametrize("bad", ["", "{}", '{a="x"', 'a=="x"', 'a=~"("', '{a="x}'])
def test_bad_matchers_are_refused(bad: str) -> None:
    with pytest.raises(MatcherError):
        parse_matchers(bad)


def test_matcher_ops_and_missing_label() -> None:
    ne, nre = parse_matchers('{env!="prod", team!~"db.*"}')
    assert ne.matches({}) and not ne.matches({"env": "prod"})
    assert nre.matches({"team": "web"}) and not nre.matches({"team": "dba"})


def test_alert_labels_include_fields_and_labels_win() -> None:
    labels = alert_labels(alert("e", severity="warning", host="h1"))
    assert labels["service"] == "api" and labels["severity"] == "warning"
    assert labels["dedup_key"] == "k1" and labels["host"] == "h1"
    with_label = alert("e", severity="warning")
    with_label.labels["severity"] = "custom"
    assert alert_labels(with_label)["severity"] == "custom"  # a real label wins


def test_silence_window_service_and_matchers() -> None:
    silence = Silence("s1", "api", parse_matchers('{host="h1"}'), NOW - 10, NOW + 10)
    assert silencing([silence], "api", {"host": "h1"}, NOW) is silence
    assert silencing([silence], "db", {"host": "h1"}, NOW) is None  # other service
    assert silencing([silence], "api", {"host": "h2"}, NOW) is None
    assert silencing([silence], "api", {"host": "h1"}, NOW + 10) is None  # ended
    assert silencing([silence], "api", {"host": "h1"}, NOW - 11) is None  # not started
    everywhere = Silence("s2", "", parse_matchers('{host="h1"}'), NOW - 10, NOW + 10)
    assert silencing([everywhere], "db", {"host": "h1"}, NOW) is everywhere


def test_silence_proto_round_trip_and_text_matchers() -> None:
    silence = Silence("s1", "api", parse_matchers('{a="x", b=~"y|z"}'), NOW, NOW + 60, "bob", "c")
    proto = silence.to_proto()
    assert proto.matchers[1].op == spb.Matcher.OP_REGEX
    assert matchers_from_proto(proto.matchers) == silence.matchers
    as_text = [spb.Matcher(name='{a="x", b=~"y|z"}')]
    assert matchers_from_proto(as_text) == silence.matchers
    with pytest.raises(MatcherError, match=r"matchers\[0\]"):
        matchers_from_proto([spb.Matcher(name="a", op=spb.Matcher.OP_REGEX, value="(")])


def test_silenced_alert_opens_a_suppressed_incident_that_never_triggers(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    silence = Silence("s1", "", parse_matchers('{host="h1"}'), NOW - 1, NOW + 60, "bob", "deploy")
    outcome = engine.on_alert(alert("e1", host="h1"), config, NOW, View([silence]))
    assert types(outcome) == [T.INCIDENT_EVENT_TYPE_SUPPRESSED]
    assert outcome.suppressed == "silence"
    incident = outcome.events[0].incident
    assert incident.suppressed and "s1" in incident.suppressed_reason
    # Repeats are deduplicated as usual; another silenced alert joins nothing it should not.
    again = engine.on_alert(alert("e2", host="h1"), config, NOW + 1, View([silence]))
    assert types(again) == [T.INCIDENT_EVENT_TYPE_ALERT_UPDATED]
    # An unsilenced alert of the same service triggers normally.
    other = engine.on_alert(alert("e3", key="k2", host="h2"), config, NOW, View([silence]))
    assert types(other) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]
    assert not other.events[0].incident.suppressed


def test_maintenance_window_suppresses(engine: CorrelationEngine, config: TocsinConfig) -> None:
    inside = engine.on_alert(alert("e1", service="web"), config, NOW)
    assert types(inside) == [T.INCIDENT_EVENT_TYPE_SUPPRESSED]
    assert inside.suppressed == "maintenance"
    assert "upgrade" in inside.events[0].incident.suppressed_reason
    after = engine.on_alert(alert("e2", service="web", key="k2"), config, NOW + 3 * 3600)
    assert types(after) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]


# --- inhibition ----------------------------------------------------------------------------


def test_inhibition_needs_a_firing_source_with_equal_labels(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    node = engine.on_alert(alert("e1", key="node", alertname="NodeDown", host="h1"), config, NOW)
    assert types(node) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]
    same_host = engine.on_alert(alert("e2", key="t1", severity="warning", host="h1"), config, NOW)
    assert types(same_host) == [T.INCIDENT_EVENT_TYPE_SUPPRESSED]
    assert same_host.suppressed == "inhibition"
    assert "node" in same_host.events[0].incident.suppressed_reason
    other_host = engine.on_alert(alert("e3", key="t2", severity="warning", host="h2"), config, NOW)
    assert types(other_host) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]
    critical = engine.on_alert(alert("e4", key="t3", severity="critical", host="h1"), config, NOW)
    assert types(critical) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]  # not a target
    # Once the source resolves, targets page again.
    engine.on_alert(alert("e5", key="node", action="resolve"), config, NOW + 1)
    later = engine.on_alert(alert("e6", key="t4", severity="warning", host="h1"), config, NOW + 2)
    assert types(later) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]


# --- flapping ------------------------------------------------------------------------------


def test_flapping_worked_examples() -> None:
    assert percent_state_change([1] * 21) == 0.0
    assert percent_state_change([0] * 20 + [1]) == pytest.approx(6.25)  # one recent change
    assert percent_state_change([1, 0]) == pytest.approx(6.25)  # short history: padded
    assert percent_state_change([1] + [0] * 20) == pytest.approx(3.75)  # one old change
    alternating = [i % 2 for i in range(21)]
    assert percent_state_change(alternating) == pytest.approx(100.0)


def test_flap_hysteresis() -> None:
    flap = FlapState()
    flips = [flap.record(i % 2) for i in range(12)]
    assert True in flips and flap.flapping
    first = flips.index(True)
    assert all(f is None for f in flips[:first])
    stops = [flap.record(1) for _ in range(21)]
    assert stops.count(False) == 1 and not flap.flapping


def test_flapping_alert_is_marked_and_stops_repaging(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    triggered = flapping = 0
    incident_ids = set()
    for i in range(30):
        action = "trigger" if i % 2 == 0 else "resolve"
        outcome = engine.on_alert(alert(f"e{i}", service="db", action=action), config, NOW + i)
        triggered += types(outcome).count(T.INCIDENT_EVENT_TYPE_TRIGGERED)
        flapping += types(outcome).count(T.INCIDENT_EVENT_TYPE_FLAPPING)
        incident_ids.update(e.incident.incident_id for e in outcome.events)
        if T.INCIDENT_EVENT_TYPE_FLAPPING in types(outcome):
            assert outcome.events[-1].incident.flapping
    assert flapping == 1  # once, on start
    assert triggered <= 6  # paged until flapping started, not on every change after
    assert len(incident_ids) == triggered
    # Steady again: flapping stops (one event) and the incident resolves with the alert.
    stop_events: list[int] = []
    for i in range(30, 60):
        outcome = engine.on_alert(alert(f"e{i}", service="db", action="trigger"), config, NOW + i)
        stop_events += types(outcome)
    assert stop_events.count(T.INCIDENT_EVENT_TYPE_FLAPPING) == 1
    resolved = engine.on_alert(alert("z", service="db", action="resolve"), config, NOW + 99)
    assert types(resolved) == [T.INCIDENT_EVENT_TYPE_RESOLVED]
    assert not resolved.events[0].incident.flapping


def _flap_starts(engine: CorrelationEngine, config: TocsinConfig, service: str) -> list[int]:
    """The alternating trigger/resolve states (of 30) at which a FLAPPING event came."""
    starts = []
    for i in range(30):
        action = "trigger" if i % 2 == 0 else "resolve"
        outcome = engine.on_alert(
            alert(f"{service}-{i}", service=service, action=action), config, NOW + i
        )
        if T.INCIDENT_EVENT_TYPE_FLAPPING in types(outcome):
            starts.append(i)
    return starts


def test_flap_thresholds_come_from_the_services_config(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    default, twitchy = _flap_starts(engine, config, "db"), _flap_starts(engine, config, "twitchy")
    assert len(default) == len(twitchy) == 1
    assert twitchy[0] < default[0]  # above 20 % comes sooner than above 50 %
    # With detection off nothing flaps, and every trigger after a resolve pages again.
    assert _flap_starts(engine, config, "unflapped") == []


def test_turning_flap_detection_off_stops_a_flapping_alert_at_its_next_change() -> None:
    flap = FlapState()
    for i in range(12):
        flap.record(i % 2)
    assert flap.flapping
    assert flap.record(1, math.inf, math.inf) is False and not flap.flapping


def test_flap_thresholds_are_checked_in_the_config() -> None:
    text = CONFIG.replace(
        "flapping: {high_threshold: 20, low_threshold: 10}",
        "flapping: {high_threshold: 20, low_threshold: 30}",
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, "tocsin.yaml")
    (issue,) = error.value.issues
    assert issue.path == "services[3].flapping.low_threshold"
    assert "must be below high_threshold (20)" in issue.message


# --- change correlation ---------------------------------------------------------------------


def change(event_id: str, service: str, at: float) -> alert_pb2.ChangeEvent:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(at, UTC))
    return alert_pb2.ChangeEvent(
        event_id=event_id, service_id=service, summary=f"deploy {event_id}", timestamp=ts
    )


def test_change_ranking_same_service_first_then_recency() -> None:
    records = [
        ChangeRecord.from_event(change("up-new", "db", NOW - 60), NOW),
        ChangeRecord.from_event(change("own-old", "api", NOW - 1200), NOW),
        ChangeRecord.from_event(change("own-new", "api", NOW - 300), NOW),
        ChangeRecord.from_event(change("too-old", "api", NOW - 4000), NOW),
        ChangeRecord.from_event(change("unrelated", "web", NOW - 10), NOW),
    ]
    causes = probable_causes("api", ("db",), records, NOW, 3600)
    assert [c.change.event_id for c in causes] == ["own-new", "own-old", "up-new"]
    assert [c.rank for c in causes] == [1, 2, 3]
    assert causes[0].reason == "same service, 5 min before"
    assert causes[2].reason.startswith("upstream db")


def test_big_changes_are_copied_without_details_and_the_causes_stay_bounded() -> None:
    """Ten changes of half a megabyte each (as ingest accepts) would make the incident
    event bigger than a Kafka record: what an incident copies is bounded."""
    records = []
    for i in range(10):
        big = change(f"big-{i}", "api", NOW - 60 - i)
        big.details.update({"diff": "x" * 500_000})
        big.links.add(href=f"https://ci.example/{i}", text="pipeline")
        records.append(ChangeRecord.from_event(big, NOW))
    causes = probable_causes("api", (), records, NOW, 3600)
    assert [c.change.event_id for c in causes] == [f"big-{i}" for i in range(10)]
    assert all(not c.change.HasField("details") for c in causes)
    assert all(c.change.links[0].href.startswith("https://ci.example/") for c in causes)
    assert all("details left out" in c.reason for c in causes)
    assert sum(c.ByteSize() for c in causes) <= MAX_CAUSES_BYTES
    # Small changes keep their details.
    small = change("small", "api", NOW - 30)
    small.details.update({"version": "1.2.3"})
    [kept] = probable_causes("api", (), [ChangeRecord.from_event(small, NOW)], NOW, 3600)
    assert kept.change.details["version"] == "1.2.3" and "left out" not in kept.reason


def test_causes_that_do_not_fit_even_without_details_are_left_out() -> None:
    records = []
    for i in range(10):
        wordy = change(f"wordy-{i}", "api", NOW - 60 - i)
        wordy.summary = "s" * 9_000  # ingest allows 1,024: this exercises the bound itself
        records.append(ChangeRecord.from_event(wordy, NOW))
    causes = probable_causes("api", (), records, NOW, 3600)
    assert 0 < len(causes) < 10
    assert [c.rank for c in causes] == list(range(1, len(causes) + 1))
    assert sum(c.ByteSize() for c in causes) <= MAX_CAUSES_BYTES


def test_changes_kept_for_retention_once_each() -> None:
    kept: list[dict[str, Any]] = []
    kept = add_change(kept, ChangeRecord.from_event(change("a", "api", NOW - 100), NOW), NOW, 50)
    kept = add_change(kept, ChangeRecord.from_event(change("b", "api", NOW), NOW), NOW, 50)
    kept = add_change(kept, ChangeRecord.from_event(change("b", "api", NOW), NOW), NOW, 50)
    assert [c["event_id"] for c in kept] == ["b"]


def test_new_incident_lists_probable_causes(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    engine.on_change(change("own", "api", NOW - 600), NOW - 600, 86400)
    engine.on_change(change("stale", "api", NOW - 3600), NOW - 3600, 86400)  # > 30m lookback
    upstream = [ChangeRecord.from_event(change("db-1", "db", NOW - 60), NOW)]
    outcome = engine.on_alert(alert("e1"), config, NOW, View(upstream_changes=upstream))
    causes = outcome.events[0].incident.probable_causes
    assert [(c.rank, c.change.event_id) for c in causes] == [(1, "own"), (2, "db-1")]


# --- dependencies ----------------------------------------------------------------------------


def test_downstream_incident_is_held_then_released(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    view = View(open_incidents={"db": [OpenIncident("db-inc", NOW - 5)]})
    held = engine.on_alert(alert("e1"), config, NOW, view)
    assert types(held) == [T.INCIDENT_EVENT_TYPE_HELD]
    incident = held.events[0].incident
    assert incident.held_by_incident_id == "db-inc"
    assert incident.status == T.INCIDENT_STATUS_TRIGGERED
    assert dict(engine.held) == {
        incident.incident_id: {"holder": "db-inc", "holder_service": "db", "service_id": "api"}
    }
    # web depends on api transitively on db: held by the nearest upstream with an incident.
    web_view = View(open_incidents={"api": [], "db": [OpenIncident("db-inc", NOW - 5)]})
    web = engine.on_alert(alert("w1", service="web", key="w"), config, NOW + 99999, web_view)
    assert web.events[0].incident.held_by_incident_id == "db-inc"

    release = engine.held_release_command(incident.incident_id, engine.held[incident.incident_id])
    assert release.actor == SELF_ACTOR and release.service_id == "api"
    released = engine.on_command(release, NOW + 60)
    assert types(released) == [T.INCIDENT_EVENT_TYPE_RELEASED]
    assert released.events[0].incident.held_by_incident_id == ""
    assert released.events[0].incident.status == T.INCIDENT_STATUS_TRIGGERED
    assert incident.incident_id not in engine.held
    assert engine.on_command(release, NOW + 61).dropped == "not_held"  # repeats are no-ops


def test_held_incident_resolving_first_never_pages(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    view = View(open_incidents={"db": [OpenIncident("db-inc", NOW)]})
    incident_id = engine.on_alert(alert("e1"), config, NOW, view).events[0].incident.incident_id
    resolved = engine.on_alert(alert("e2", action="resolve"), config, NOW + 1)
    assert types(resolved) == [T.INCIDENT_EVENT_TYPE_RESOLVED]
    assert incident_id not in engine.held


def test_no_upstream_incident_triggers(engine: CorrelationEngine, config: TocsinConfig) -> None:
    outcome = engine.on_alert(alert("e1"), config, NOW, View(open_incidents={"db": []}))
    assert types(outcome) == [T.INCIDENT_EVENT_TYPE_TRIGGERED]


def test_an_outsider_cannot_release(engine: CorrelationEngine, config: TocsinConfig) -> None:
    view = View(open_incidents={"db": [OpenIncident("db-inc", NOW)]})
    incident_id = engine.on_alert(alert("e1"), config, NOW, view).events[0].incident.incident_id
    entry = incident_pb2.TimelineEntryCommand(type=T.INCIDENT_EVENT_TYPE_RELEASED, message="x")
    outcome = engine.on_command(cmd(incident_id, "c1", timeline_entry=entry), NOW + 1)
    assert outcome.dropped == "timeline_entry_reserved_type"


# --- the new commands ---------------------------------------------------------------------------


def test_unacknowledge_returns_to_triggered(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    incident_id = (
        engine.on_alert(alert("e1", service="db"), config, NOW).events[0].incident.incident_id
    )
    assert engine.on_command(cmd(incident_id, "c0", unacknowledge={}), NOW).dropped == (
        "not_acknowledged"
    )
    engine.on_command(cmd(incident_id, "c1", acknowledge={}), NOW + 1)
    outcome = engine.on_command(
        cmd(incident_id, "c2", actor="escalation", unacknowledge={}), NOW + 2
    )
    assert types(outcome) == [T.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED]
    event = outcome.events[0]
    assert event.incident.status == T.INCIDENT_STATUS_TRIGGERED
    assert event.command_id == "c2" and event.actor == "escalation"
    assert engine.on_command(cmd(incident_id, "c3", unacknowledge={}), NOW + 3).dropped == (
        "not_acknowledged"
    )
    # acknowledging again works after the timeout
    again = engine.on_command(cmd(incident_id, "c4", acknowledge={}), NOW + 4)
    assert types(again) == [T.INCIDENT_EVENT_TYPE_ACKNOWLEDGED]


def test_unacknowledge_of_resolved_incident_is_dropped(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    incident_id = (
        engine.on_alert(alert("e1", service="db"), config, NOW).events[0].incident.incident_id
    )
    engine.on_command(cmd(incident_id, "c1", acknowledge={}), NOW + 1)
    engine.on_command(cmd(incident_id, "c2", resolve={}), NOW + 2)
    assert engine.on_command(cmd(incident_id, "c3", unacknowledge={}), NOW + 3).dropped == (
        "incident_resolved"
    )


def test_timeline_entry_emits_the_given_type_with_status_unchanged(
    engine: CorrelationEngine, config: TocsinConfig
) -> None:
    incident_id = (
        engine.on_alert(alert("e1", service="db"), config, NOW).events[0].incident.incident_id
    )
    engine.on_command(cmd(incident_id, "c1", acknowledge={}), NOW + 1)
    entry = incident_pb2.TimelineEntryCommand(
        type=T.INCIDENT_EVENT_TYPE_ESCALATED, message="level 2 reached"
    )
    outcome = engine.on_command(
        cmd(incident_id, "c2", actor="escalation", timeline_entry=entry), NOW + 2
    )
    assert types(outcome) == [T.INCIDENT_EVENT_TYPE_ESCALATED]
    event = outcome.events[0]
    assert event.message == "level 2 reached" and event.actor == "escalation"
    assert event.incident.status == T.INCIDENT_STATUS_ACKNOWLEDGED
    assert event.incident.incident_id == incident_id
    # Still recorded after the incident resolved (delivery outcomes arrive late).
    engine.on_command(cmd(incident_id, "c3", resolve={}), NOW + 3)
    notified = incident_pb2.TimelineEntryCommand(type=T.INCIDENT_EVENT_TYPE_NOTIFIED, message="ok")
    late = engine.on_command(cmd(incident_id, "c4", timeline_entry=notified), NOW + 4)
    assert types(late) == [T.INCIDENT_EVENT_TYPE_NOTIFIED]
    assert late.events[0].incident.status == T.INCIDENT_STATUS_RESOLVED


@pytest.mark.parametrize(
    "reserved",
    [
        T.INCIDENT_EVENT_TYPE_TRIGGERED,
        T.INCIDENT_EVENT_TYPE_RESOLVED,
        T.INCIDENT_EVENT_TYPE_UNSPECIFIED,
    ],
)
def test_timeline_entry_of_a_state_type_is_dropped(
    engine: CorrelationEngine, config: TocsinConfig, reserved: int
) -> None:
    incident_id = (
        engine.on_alert(alert("e1", service="db"), config, NOW).events[0].incident.incident_id
    )
    entry = incident_pb2.TimelineEntryCommand(type=reserved, message="x")  # type: ignore[arg-type]
    outcome = engine.on_command(cmd(incident_id, "c1", timeline_entry=entry), NOW + 1)
    assert outcome.dropped == "timeline_entry_reserved_type" and not outcome.events
