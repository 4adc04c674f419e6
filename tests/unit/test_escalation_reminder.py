"""The public-update reminder (pure, escalation's lifecycle): a high-urgency incident on a
service of the status page with no public status update for status_page.update_reminders
gets a STATUS_UPDATE_DUE timeline entry, again a cadence later; an update moves it; the
incident resolved (or resolved on the page) ends it. Timers play forward on a FakeClock."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tocsin.v1 import incident_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.timeutil import set_timestamp
from tocsin_escalation import lifecycle
from tocsin_escalation.lifecycle import UPDATE_REMINDER, Effects, EscalationState, TimerSpec

E = incident_pb2
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def make_config(enabled: bool = True) -> TocsinConfig:
    return parse_config(
        textwrap.dedent(
            f"""\
            version: 1
            services:
              - {{id: web, name: Web, escalation_policy: p}}
              - {{id: batch, name: Batch, escalation_policy: p}}
            users:
              - id: ana
                name: Ana
                email: ana@example.com
                contact_methods:
                  - {{id: ana-mail, type: email, address: ana@example.com}}
                  - {{id: ana-sms, type: sms, address: "+15555550101"}}
                notification_rules:
                  high:
                    - {{delay: 0m, contact_method: ana-mail}}
                    - {{delay: 5m, contact_method: ana-sms}}
                  low:
                    - {{delay: 10m, contact_method: ana-sms}}
                    - {{delay: 20m, contact_method: ana-mail}}
              - id: bo
                name: Bo
                email: bo@example.com
                contact_methods: [{{id: bo-mail, type: email, address: bo@example.com}}]
                notification_rules: {{high: [{{delay: 0m, contact_method: bo-mail}}]}}
              - id: cy
                name: Cy
                email: cy@example.com
                contact_methods: [{{id: cy-mail, type: email, address: cy@example.com}}]
                notification_rules: {{high: [{{delay: 0m, contact_method: cy-mail}}]}}
            escalation_policies:
              - id: p
                name: P
                levels:
                  - {{delay: 45m, targets: [{{type: user, id: ana}}]}}
                  - {{delay: 1h, targets: [{{type: user, id: bo}}]}}
            status_page:
              enabled: {str(enabled).lower()}
              components: [{{id: shop, name: Shop, services: [web]}}]
              update_reminders: {{high: 30m, low: 2h}}
            """
        ),
        "tocsin.yaml",
    )


def incident(
    status: int = E.INCIDENT_STATUS_TRIGGERED, service: str = "web", low: bool = False
) -> incident_pb2.Incident:
    found = incident_pb2.Incident(
        incident_id="inc-1",
        service_id=service,
        status=status,  # type: ignore[arg-type]
        urgency=E.URGENCY_LOW if low else E.URGENCY_HIGH,
        escalation_policy_id="p",
    )
    set_timestamp(found.created_at, T0)
    return found


@dataclass
class Sim:
    config: TocsinConfig
    service: str = "web"
    low: bool = False
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    state: EscalationState = field(default_factory=EscalationState)
    current: incident_pb2.Incident = field(default_factory=incident)
    timers: dict[str, TimerSpec] = field(default_factory=dict)
    reminders: list[tuple[float, str]] = field(default_factory=list)
    sent: list[tuple[float, lifecycle.PlannedReminder]] = field(default_factory=list)

    def _apply(self, effects: Effects) -> None:
        groups = set()
        if effects.cancel_escalation:
            groups.add("inc-1")
        if effects.cancel_reminder:
            groups.add(lifecycle.reminder_group("inc-1"))
        self.timers = {k: t for k, t in self.timers.items() if t.group not in groups}
        at = (self.clock.now() - T0).total_seconds()
        for command in effects.commands:
            if command.event_type == E.INCIDENT_EVENT_TYPE_STATUS_UPDATE_DUE:
                self.reminders.append((at, command.message))
        self.sent += [(at, r) for r in effects.reminders]
        for timer in effects.timers:
            self.timers[timer.timer_id] = timer
        if effects.state is not None:
            self.state = effects.state

    def event(self, kind: int, event_id: str, page_status: str = "", assigned: str = "") -> Effects:
        status = {
            E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED: E.INCIDENT_STATUS_ACKNOWLEDGED,
            E.INCIDENT_EVENT_TYPE_RESOLVED: E.INCIDENT_STATUS_RESOLVED,
        }.get(kind, self.current.status)
        assigned = assigned or self.current.assigned_user_id
        self.current = incident(status, self.service, self.low)
        self.current.assigned_user_id = assigned
        ev = incident_pb2.IncidentEvent(event_id=event_id, type=kind, incident=self.current)  # type: ignore[arg-type]
        set_timestamp(ev.at, self.clock.now())
        if page_status:
            ev.status_update.status = page_status
            ev.status_update.message = "m"
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


def reminded_at(sim: Sim) -> list[float]:
    return [at for at, _ in sim.reminders]


def test_no_public_update_reminds_every_cadence_even_when_acknowledged() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(600)
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")  # escalation stops; not this
    sim.run_until(3 * 3600 + 1)
    assert reminded_at(sim) == [1800, 3600, 5400, 7200, 9000, 10800]
    assert "no public status update for 30 min" in sim.reminders[0][1]


def test_an_update_moves_the_reminder_and_a_resolved_one_ends_it() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(1200)
    sim.event(E.INCIDENT_EVENT_TYPE_STATUS_UPDATED, "ev-u1", "investigating")
    sim.run_until(1200 + 1799)
    assert reminded_at(sim) == []  # 30 min from the update, not from the opening
    sim.run_until(1200 + 1800)
    assert reminded_at(sim) == [3000]
    sim.event(E.INCIDENT_EVENT_TYPE_STATUS_UPDATED, "ev-u2", "resolved")
    sim.run_until(24 * 3600)
    assert reminded_at(sim) == [3000]
    assert not [t for t in sim.timers.values() if t.kind == UPDATE_REMINDER]


def test_resolving_the_incident_ends_the_reminder() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(60)
    effects = sim.event(E.INCIDENT_EVENT_TYPE_RESOLVED, "ev-r")
    assert effects.cancel_reminder
    sim.run_until(24 * 3600)
    assert sim.reminders == []


def test_a_late_timer_of_a_resolved_incident_does_nothing() -> None:
    config = make_config()
    timer = TimerSpec(UPDATE_REMINDER, "inc-1", T0)
    done = incident(E.INCIDENT_STATUS_RESOLVED)
    effects = lifecycle.on_timer(config, timer, done, EscalationState(), T0, {})
    assert effects.commands == [] and effects.timers == []


def test_low_urgency_has_its_own_cadence() -> None:
    sim = Sim(make_config(), low=True)
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(4 * 3600)
    assert reminded_at(sim) == [7200, 14400]


def test_no_reminder_off_the_page() -> None:
    off_page = Sim(make_config(), service="batch")  # batch is on no component
    off_page.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    disabled = Sim(make_config(enabled=False))
    disabled.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    for sim in (off_page, disabled):
        sim.run_until(24 * 3600)
        assert sim.reminders == [] and not sim.timers.get("inc-1:remind|update_reminder")


def test_one_reminder_timer_per_incident_and_replays_yield_the_same_command() -> None:
    config = make_config()
    timer = TimerSpec(UPDATE_REMINDER, "inc-1", T0 + timedelta(minutes=30))
    assert timer.timer_id == "inc-1:remind|update_reminder"
    first = lifecycle.on_timer(config, timer, incident(), EscalationState(), T0, {})
    again = lifecycle.on_timer(config, timer, incident(), EscalationState(), T0, {})
    assert first.commands[0].command_id == again.commands[0].command_id  # correlation dedups
    assert first.commands[0].actor == "escalation"


# --- the reminder reaches the incident's responders ----------------------------------------


def who(sim: Sim) -> list[tuple[float, str, str]]:
    return [(at, r.user_id, r.contact_method_id) for at, r in sim.sent]


def test_the_reminder_goes_to_whom_the_current_level_pages_by_their_immediate_rules() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(1800)
    # Level 1 (ana) paged; by her rule that pages at once (e-mail), not the sms 5 min later.
    assert who(sim) == [(1800, "ana", "ana-mail")]
    assert sim.state.level == 1
    sim.sent.clear()
    sim.run_until(45 * 60)
    assert sim.state.level == 2  # level 2 (bo) reached at 45 min
    sim.run_until(3600)
    assert who(sim) == [(3600, "bo", "bo-mail")]
    (_, reminder) = sim.sent[0]
    assert reminder.kind == "status_update_due"
    assert reminder.text == (
        "No public status update has been posted for 30 minutes: post one for the status page."
    )
    assert "reminded bo" in sim.reminders[-1][1]


def test_a_reminder_is_keyed_by_its_firing_so_a_refired_timer_reminds_nobody_twice() -> None:
    config = make_config()
    state = EscalationState(run="ev-t", phase=lifecycle.ESCALATING, policy_id="p", level=1)
    timer = TimerSpec(UPDATE_REMINDER, "inc-1", T0 + timedelta(minutes=30))
    late = T0 + timedelta(minutes=31)
    first = lifecycle.on_timer(config, timer, incident(), state, T0 + timedelta(minutes=30), {})
    again = lifecycle.on_timer(config, timer, incident(), state, late, {})  # after a crash
    assert [r.idempotency_key for r in first.reminders] == [
        r.idempotency_key for r in again.reminders
    ]
    assert first.reminders[0].idempotency_key == "inc-1:reminder:2026-01-05T12:30:00+00:00:ana:0"
    following = TimerSpec(UPDATE_REMINDER, "inc-1", T0 + timedelta(minutes=60))
    nxt = lifecycle.on_timer(config, following, incident(), state, following.due, {})
    assert nxt.reminders[0].idempotency_key != first.reminders[0].idempotency_key


def test_an_acknowledged_incident_reminds_the_level_that_was_paged() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(60)
    sim.event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, "ev-ack")  # before level 2
    sim.run_until(3600)
    assert who(sim) == [(1800, "ana", "ana-mail"), (3600, "ana", "ana-mail")]


def test_an_incident_reassigned_to_a_person_reminds_that_person() -> None:
    sim = Sim(make_config())
    sim.event(E.INCIDENT_EVENT_TYPE_TRIGGERED, "ev-t")
    sim.run_until(60)
    sim.event(E.INCIDENT_EVENT_TYPE_REASSIGNED, "ev-re", assigned="cy")
    sim.run_until(1800)
    assert who(sim) == [(1800, "cy", "cy-mail")]


def test_without_an_immediate_rule_the_first_rule_is_used() -> None:
    config = make_config()
    (only,) = lifecycle.reminder_pages(config, ["ana"], "low", "seed", "k", "t")
    assert (only.contact_method_id, only.rule_index) == ("ana-sms", 0)
    assert only.idempotency_key == "seed:ana:0"


def test_nobody_is_reminded_before_anyone_was_paged() -> None:
    config = make_config()
    held = EscalationState(phase=lifecycle.STOPPED, policy_id="p")  # held upstream
    timer = TimerSpec(UPDATE_REMINDER, "inc-1", T0 + timedelta(minutes=30))
    effects = lifecycle.on_timer(config, timer, incident(), held, timer.due, {})
    assert effects.reminders == []
    assert effects.commands[0].message.endswith("nobody to remind")


def test_a_state_of_an_older_build_reminds_level_one_and_unknown_fields_are_ignored() -> None:
    old = EscalationState.from_json(
        b'{"run":"ev-t","phase":"escalating","loop_base":0,"policy_id":"p","user_id":"",'
        b'"quiet_unack":"","from_a_newer_build":1}'
    )
    assert old.level == 0
    assert lifecycle.responders(make_config(), incident(), old, T0, {}) == ["ana"]


def test_the_cadence_in_words() -> None:
    assert lifecycle.reminder_text(timedelta(seconds=4)).startswith(
        "No public status update has been posted for 4 seconds"
    )
    assert "for 1 minute:" in lifecycle.reminder_text(timedelta(minutes=1))
    assert "for 90 minutes:" in lifecycle.reminder_text(timedelta(minutes=90))
    assert "for 2 hours:" in lifecycle.reminder_text(timedelta(hours=2))
