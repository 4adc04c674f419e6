"""Unit tests of the escalation state machine (pure): incident events and timers in, pages,
commands and timers out. A tiny driver plays the timers forward with a FakeClock."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from tocsin.v1 import incident_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.timeutil import set_timestamp
from tocsin_escalation import lifecycle
from tocsin_escalation.lifecycle import (
    ACK_TIMEOUT,
    AUTO_RESOLVE,
    LEVEL,
    SNOOZE_END,
    Effects,
    EscalationState,
    TimerSpec,
)

E = incident_pb2
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

CONFIG = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: web, name: Web, escalation_policy: ladder, ack_timeout: 10m,
         auto_resolve_timeout: 4h}
      - {id: api, name: API, escalation_policy: ladder}
    users:
      - id: alice
        name: Alice
        email: alice@example.com
        contact_methods:
          - {id: hook, type: webhook, address: "http://x/alice"}
          - {id: sms, type: sms, address: "+15555550101"}
        notification_rules:
          high: [{delay: 0s, contact_method: hook}, {delay: 2m, contact_method: sms}]
      - id: bob
        name: Bob
        email: bob@example.com
        contact_methods: [{id: hook, type: webhook, address: "http://x/bob"}]
        notification_rules:
          high: [{delay: 0s, contact_method: hook}]
      - id: carol
        name: Carol
        email: carol@example.com
        contact_methods: [{id: hook, type: webhook, address: "http://x/carol"}]
        notification_rules:
          high: [{delay: 0s, contact_method: hook}]
    schedules:
      - id: rota
        name: Rota
        time_zone: UTC
        layers: [{start: 2026-01-01T00:00:00, rotation: weekly, users: [carol]}]
    escalation_policies:
      - id: ladder
        name: Ladder
        repeat: 1
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
          - {delay: 10m, targets: [{type: user, id: bob}]}
      - id: rota-policy
        name: Rota
        levels:
          - {delay: 5m, targets: [{type: schedule, id: rota}]}
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


def incident(status: int = E.INCIDENT_STATUS_TRIGGERED, **kw: object) -> incident_pb2.Incident:
    found = incident_pb2.Incident(
        incident_id="inc-1",
        service_id=str(kw.pop("service_id", "web")),
        status=status,  # type: ignore[arg-type]
        urgency=E.URGENCY_HIGH,
        escalation_policy_id=str(kw.pop("policy", "ladder")),
        assigned_user_id=str(kw.pop("user", "")),
    )
    set_timestamp(found.created_at, T0)
    if "snoozed_until" in kw:
        set_timestamp(found.snoozed_until, kw.pop("snoozed_until"))  # type: ignore[arg-type]
    return found


@dataclass
class Sim:
    """Plays an incident's escalation: events applied, timers fired as the clock moves."""

    config: TocsinConfig
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    state: EscalationState = field(default_factory=EscalationState)
    current: incident_pb2.Incident = field(default_factory=incident)
    timers: dict[str, TimerSpec] = field(default_factory=dict)
    log: list[tuple[float, str]] = field(default_factory=list)  # (seconds, what)

    def _apply(self, effects: Effects) -> None:
        if effects.cancel_escalation:
            self.timers = {k: t for k, t in self.timers.items() if t.kind == AUTO_RESOLVE}
        if effects.cancel_auto_resolve:
            self.timers = {k: t for k, t in self.timers.items() if t.kind != AUTO_RESOLVE}
        at = (self.clock.now() - T0).total_seconds()
        for page in effects.pages:
            self.log.append(
                (at, f"page {page.user_id}/{page.contact_method_id} L{page.level} loop{page.loop}")
            )
        for command in effects.commands:
            self.log.append((at, command.kind))
        for timer in effects.timers:
            self.timers[timer.timer_id] = timer
        if effects.state is not None:
            self.state = effects.state

    def event(self, kind: int, event_id: str, command_id: str = "", **kw: object) -> Effects:
        status = {
            E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED: E.INCIDENT_STATUS_ACKNOWLEDGED,
            E.INCIDENT_EVENT_TYPE_SNOOZED: E.INCIDENT_STATUS_ACKNOWLEDGED,
            E.INCIDENT_EVENT_TYPE_RESOLVED: E.INCIDENT_STATUS_RESOLVED,
        }.get(kind, E.INCIDENT_STATUS_TRIGGERED)
        self.current = incident(status, **kw)
        ev = incident_pb2.IncidentEvent(
            event_id=event_id,
            type=kind,  # type: ignore[arg-type]
            incident=self.current,
            command_id=command_id,
        )
        effects = lifecycle.on_event(self.config, ev, self.state, self.clock.now(), {})
        self._apply(effects)
        return effects

    def run_until(self, seconds: float) -> None:
        end = T0 + timedelta(seconds=seconds)
        while True:
            due = sorted((t for t in self.timers.values() if t.due <= end), key=lambda t: t.due)
            if not due:
                break
            timer = due[0]
            if timer.due > self.clock.now():
                self.clock.advance(timer.due - self.clock.now())
            del self.timers[timer.timer_id]
            self._apply(
                lifecycle.on_timer(
                    self.config, timer, self.current, self.state, self.clock.now(), {}
                )
            )
        if end > self.clock.now():
            self.clock.advance(end - self.clock.now())


def test_level_one_at_once_level_two_after_its_delay_then_one_repeat(
    config: TocsinConfig,
) -> None:
    sim = Sim(config)
    effects = sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    # The level reached is a timeline entry escalation records itself, not a command for
    # correlation (only state changes go there).
    assert [e.message for e in effects.entries] == ["escalated to level 1: paged alice"]
    assert effects.commands == []
    sim.run_until(3600)
    assert sim.log == [
        (0, "page alice/hook L1 loop0"),
        (120, "page alice/sms L1 loop0"),  # alice's delayed rule
        (300, "page bob/hook L2 loop0"),
        (900, "page alice/hook L1 loop1"),  # repeat 1
        (1020, "page alice/sms L1 loop1"),
        (1200, "page bob/hook L2 loop1"),
        # repeat: 1 -> the policy ran twice; then it stops.
    ]
    assert [t.kind for t in sim.timers.values()] == [AUTO_RESOLVE]


def test_acknowledging_stops_escalation_and_starts_the_ack_timeout(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    sim.run_until(60)
    effects = sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")
    assert effects.cancel_escalation
    assert [(t.kind, t.due) for t in effects.timers] == [
        (ACK_TIMEOUT, T0 + timedelta(seconds=60 + 600))
    ]
    sim.run_until(659)
    assert sim.log == [(0, "page alice/hook L1 loop0")]  # no sms, no level 2
    sim.run_until(700)
    assert sim.log[-1] == (660, "unacknowledge")


def test_the_ack_timeout_unacknowledged_event_restarts_at_level_one_with_a_new_loop(
    config: TocsinConfig,
) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")
    sim.run_until(600)
    sim.event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, "ev-unack")
    loop = lifecycle.loop_base("ev-unack")
    assert sim.log[-1] == (600, f"page alice/hook L1 loop{loop}")
    sim.run_until(900)
    assert sim.log[-1] == (900, f"page bob/hook L2 loop{loop}")


def test_no_ack_timeout_when_the_service_has_none(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "t", service_id="api")
    effects = sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "a", service_id="api")
    assert effects.timers == []
    assert sim.timers == {}  # api has no auto-resolve either


def test_resolve_cancels_everything(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    effects = sim.event(E.INCIDENT_EVENT_TYPE_RESOLVED, "ev-resolve")
    assert effects.cancel_escalation and effects.cancel_auto_resolve
    sim.run_until(24 * 3600)
    assert sim.log == [(0, "page alice/hook L1 loop0")]


def test_a_stale_timer_does_nothing_even_if_it_was_not_cancelled(config: TocsinConfig) -> None:
    sim = Sim(config)
    first = sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    level_two = next(t for t in first.timers if t.kind == LEVEL)
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")
    effects = lifecycle.on_timer(config, level_two, sim.current, sim.state, T0, {})
    assert effects.pages == [] and effects.dropped.startswith("stale")


def test_snooze_pauses_then_pages_whoever_is_on_call_then(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger", policy="rota-policy")
    until = T0 + timedelta(hours=1)
    effects = sim.event(
        E.INCIDENT_EVENT_TYPE_SNOOZED, "ev-snooze", policy="rota-policy", snoozed_until=until
    )
    assert [(t.kind, t.due) for t in effects.timers] == [(SNOOZE_END, until)]
    sim.run_until(3599)
    assert sim.log == [(0, "page carol/hook L1 loop0")]
    sim.run_until(3600)
    run = lifecycle.derived_id("ev-snooze", "snooze-end")
    assert sim.log[1:] == [
        (3600, f"page carol/hook L1 loop{lifecycle.loop_base(run)}"),
        (3600, "unacknowledge"),  # back to triggered in correlation
    ]
    # That unacknowledge comes back as an event: it must not page a second time.
    quiet = sim.state.quiet_unack
    effects = sim.event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, "ev-u", command_id=quiet)
    assert effects.pages == [] and not effects.cancel_escalation


def test_reassign_to_a_user_pages_them_and_stops_the_old_ladder(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    sim.run_until(30)
    sim.event(E.INCIDENT_EVENT_TYPE_REASSIGNED, "ev-re", user="carol")
    sim.run_until(3600)
    loop = lifecycle.loop_base("ev-re")
    assert sim.log == [(0, "page alice/hook L1 loop0"), (30, f"page carol/hook L1 loop{loop}")]


def test_reassign_to_a_policy_restarts_there(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    sim.event(E.INCIDENT_EVENT_TYPE_REASSIGNED, "ev-re", policy="rota-policy")
    sim.run_until(3600)
    assert [what for _, what in sim.log][1:] == [
        f"page carol/hook L1 loop{lifecycle.loop_base('ev-re')}"
    ]


def test_auto_resolve_sends_a_resolve_command_as_system(config: TocsinConfig) -> None:
    sim = Sim(config)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-trigger")
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")  # ack does not stop auto-resolve
    sim.event(E.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED, "ev-u")
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack2")
    sim.run_until(4 * 3600)
    assert (4 * 3600, "resolve") in sim.log


def test_a_replayed_event_decides_the_same(config: TocsinConfig) -> None:
    ev = incident_pb2.IncidentEvent(
        event_id="ev", type=E.INCIDENT_EVENT_TYPE_TRIGGERED, incident=incident()
    )
    one = lifecycle.on_event(config, ev, EscalationState(), T0, {})
    two = lifecycle.on_event(config, ev, EscalationState(), T0, {})
    assert [t.timer_id for t in one.timers] == [t.timer_id for t in two.timers]
    assert [c.command_id for c in one.commands] == [c.command_id for c in two.commands]
    assert [e.entry_id for e in one.entries] == [e.entry_id for e in two.entries]
    assert one.entries and one.pages == two.pages


def test_a_suppressed_incident_does_not_page(config: TocsinConfig) -> None:
    held = incident()
    held.suppressed = True
    ev = incident_pb2.IncidentEvent(
        event_id="e", type=E.INCIDENT_EVENT_TYPE_TRIGGERED, incident=held
    )
    effects = lifecycle.on_event(config, ev, EscalationState(), T0, {})
    assert effects.pages == [] and [t.kind for t in effects.timers] == [AUTO_RESOLVE]


def test_timer_payload_round_trips() -> None:
    timer = TimerSpec(LEVEL, "inc-1", T0, "run", 2, 1, "bob", 3, "hook")
    assert TimerSpec.from_payload(timer.to_payload()) == timer
    assert timer.timer_id.startswith("inc-1|")
    assert TimerSpec(AUTO_RESOLVE, "inc-1", T0).timer_id == "inc-1:auto|auto_resolve"


def test_only_the_escalation_events_need_escalation_state(config: TocsinConfig) -> None:
    """The service skips reading state for the other events: they must decide nothing,
    whatever the state, and every escalation event must be one on_event handles."""
    escalating = EscalationState(run="r", phase=lifecycle.ESCALATING, policy_id="ladder")
    for kind in incident_pb2.IncidentEventType.values():
        ev = incident_pb2.IncidentEvent(event_id=f"e{kind}", type=kind, incident=incident())
        effects = lifecycle.on_event(config, ev, escalating, T0, {})
        if kind in lifecycle.ESCALATION_EVENTS:
            assert effects.dropped != "no escalation effect", kind
        else:
            assert effects == Effects(dropped="no escalation effect"), kind
