"""Automation at the edges (pure parts): which firings escalation plans on an incident's
transitions and the records they become, the approval records notification keeps, the
signed headers of an action, and how notification reads an action request."""

from __future__ import annotations

import asyncio
import functools
import textwrap
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from tocsin.v1 import alert_pb2, incident_pb2, notification_pb2
from tocsin_common.automation import approval as approvals
from tocsin_common.clock import FakeClock
from tocsin_common.config import TocsinConfig, parse_config
from tocsin_common.config.automation import AutomationRule
from tocsin_common.kafka import BadRecord
from tocsin_common.timeutil import set_timestamp
from tocsin_escalation import lifecycle
from tocsin_escalation.escalator import automation_record
from tocsin_escalation.lifecycle import EscalationState
from tocsin_insight.facts import is_page
from tocsin_notification.approvals import approved, decode, encode
from tocsin_notification.automation import AutomationRunner, describe, headers_for
from tocsin_notification.delivery import parse
from tocsin_notification.idempotency import Claim
from tocsin_notification.pipeline import Job, Pipeline
from tocsin_notification.providers.base import DeliveryError
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, verify

E = incident_pb2
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

CONFIG = textwrap.dedent(
    """\
    version: 1
    services:
      - {id: web, name: Web, escalation_policy: ladder}
      - {id: db, name: DB, escalation_policy: ladder}
    users:
      - id: alice
        name: Alice
        email: alice@example.com
        contact_methods: [{id: hook, type: webhook, address: "http://x/alice"}]
        notification_rules:
          high: [{delay: 0s, contact_method: hook}]
    escalation_policies:
      - id: ladder
        name: Ladder
        levels:
          - {delay: 5m, targets: [{type: user, id: alice}]}
          - {delay: 10m, targets: [{type: user, id: alice}]}
    notification:
      webhook: {signing_secret_env: TOCSIN_WEBHOOK_SECRET}
    automation:
      rules:
        - id: restart
          matchers: ['service="web"']
          "on": [triggered, "level 2"]
          requires_approval: true
          approval_ttl: 30m
          action:
            type: http
            url: https://runner.example.com/job/restart/secret-token
            body: '{"incident": "{{ incident.id }}", "trigger": "{{ trigger }}"}'
        - id: note
          matchers: ['service="web"']
          "on": [acknowledged]
          action: {type: incident, command: note, text: "Runbook for {{ incident.service }}"}
        - id: close
          matchers: ['service="web"']
          "on": [resolved]
          action: {type: incident, command: resolve}
        - id: broken
          matchers: ['service="web"', 'class="typo"']
          "on": [triggered]
          action: {type: incident, command: note, text: "{{ incident.nope.deeper }}"}
    """
)


@pytest.fixture(scope="module")
def config() -> TocsinConfig:
    return parse_config(CONFIG, "tocsin.yaml")


def incident(service: str = "web", **labels: str) -> incident_pb2.Incident:
    found = E.Incident(
        incident_id="inc-1",
        service_id=service,
        title="Disk full",
        status=E.INCIDENT_STATUS_TRIGGERED,
        urgency=E.URGENCY_HIGH,
        severity=alert_pb2.SEVERITY_CRITICAL,
        escalation_policy_id="ladder",
        labels=labels,
    )
    set_timestamp(found.created_at, T0)
    return found


def event(kind: int, found: incident_pb2.Incident, event_id: str = "ev-1") -> E.IncidentEvent:
    return E.IncidentEvent(event_id=event_id, type=kind, incident=found)  # type: ignore[arg-type]


def test_incident_facts_name_severity_and_status_as_rules_write_them() -> None:
    facts = lifecycle.incident_facts(incident(team="sre"))
    assert (facts.service, facts.urgency, facts.severity, facts.status) == (
        "web",
        "high",
        "critical",
        "triggered",
    )
    assert facts.labels == {"team": "sre"}


def test_each_transition_plans_the_rules_that_fire_on_it(config: TocsinConfig) -> None:
    state = EscalationState()
    triggered = lifecycle.on_event(
        config, event(E.INCIDENT_EVENT_TYPE_TRIGGERED, incident()), state, T0, {}
    )
    assert [(a.rule_id, a.trigger) for a in triggered.actions] == [("restart", "triggered")]
    [action] = triggered.actions
    assert action.requires_approval and action.approval_ttl == timedelta(minutes=30)
    assert action.key == "automation/inc-1/restart/triggered"

    acked = lifecycle.on_event(
        config, event(E.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, incident()), state, T0, {}
    )
    assert [(a.rule_id, a.trigger) for a in acked.actions] == [("note", "acknowledged")]
    resolved = lifecycle.on_event(
        config, event(E.INCIDENT_EVENT_TYPE_RESOLVED, incident()), state, T0, {}
    )
    assert [(a.rule_id, a.trigger) for a in resolved.actions] == [("close", "resolved")]

    # Level 2 is reached by its timer: the rule on "level 2" fires there, not at level 1.
    run = triggered.state
    assert run is not None
    level2 = lifecycle.on_timer(
        config,
        lifecycle.TimerSpec(lifecycle.LEVEL, "inc-1", T0 + timedelta(minutes=5), run.run, 2, 0),
        incident(),
        run,
        T0 + timedelta(minutes=5),
        {},
    )
    assert [(a.rule_id, a.trigger) for a in level2.actions] == [("restart", "level 2")]


def test_no_rule_fires_for_another_service_or_a_suppressed_incident(
    config: TocsinConfig,
) -> None:
    other = lifecycle.on_event(
        config, event(E.INCIDENT_EVENT_TYPE_TRIGGERED, incident("db")), EscalationState(), T0, {}
    )
    assert other.actions == []
    quiet = incident()
    quiet.suppressed = True
    suppressed = lifecycle.on_event(
        config, event(E.INCIDENT_EVENT_TYPE_TRIGGERED, quiet), EscalationState(), T0, {}
    )
    assert suppressed.actions == []


def test_a_template_that_cannot_render_is_a_timeline_entry_not_an_action(
    config: TocsinConfig,
) -> None:
    effects = lifecycle.automation(config, incident(**{"class": "typo"}), "triggered", T0)
    assert [a.rule_id for a in effects.actions] == ["restart"]
    [entry] = effects.commands
    assert entry.actor == "automation:broken"
    assert entry.message.startswith("automation did not run: automation rule 'broken': action.text")
    again = lifecycle.automation(config, incident(**{"class": "typo"}), "triggered", T0)
    assert again.commands[0].command_id == entry.command_id  # a replay: the same entry


def test_an_http_action_becomes_a_request_to_notification_keyed_by_incident(
    config: TocsinConfig,
) -> None:
    [action] = lifecycle.automation(config, incident(), "triggered", T0).actions
    topic, key, message = automation_record(incident(), action, T0)
    assert (topic.name, key) == ("notifications.requests", "inc-1")
    assert isinstance(message, notification_pb2.NotificationRequest)
    assert message.idempotency_key == "automation/inc-1/restart/triggered"
    assert not message.user_id
    auto = message.automation
    assert (auto.rule_id, auto.trigger, auto.method, auto.signed) == (
        "restart",
        "triggered",
        "POST",
        True,
    )
    assert auto.body == '{"incident": "inc-1", "trigger": "triggered"}'
    assert (auto.timeout_ms, auto.requires_approval, auto.approval_ttl_ms) == (
        10_000,
        True,
        1_800_000,
    )
    assert parse(message.SerializeToString()) == message


def test_incident_command_actions_are_commands_by_the_automation_actor(
    config: TocsinConfig,
) -> None:
    [note] = lifecycle.automation(config, incident(), "acknowledged", T0).actions
    topic, key, command = automation_record(incident(), note, T0)
    assert (topic.name, key) == ("incidents.commands", "web")
    assert isinstance(command, E.IncidentCommand)
    assert command.actor == "automation:note"
    assert command.note.text == "Runbook for web"
    _, _, again = automation_record(incident(), note, T0 + timedelta(seconds=1))
    assert isinstance(again, E.IncidentCommand)
    assert again.command_id == command.command_id  # once per firing, replay or not
    [close] = lifecycle.automation(config, incident(), "resolved", T0).actions
    _, _, resolve = automation_record(incident(), close, T0)
    assert isinstance(resolve, E.IncidentCommand)
    assert resolve.WhichOneof("command") == "resolve"
    assert resolve.command_id != command.command_id


def test_only_an_http_action_may_wait_for_approval() -> None:
    with pytest.raises(ValidationError, match="requires_approval: only an http action"):
        AutomationRule.model_validate(
            {
                "id": "r",
                "on": ["triggered"],
                "requires_approval": True,
                "action": {"type": "incident", "command": "resolve"},
            }
        )


def action(**fields: object) -> notification_pb2.AutomationAction:
    base: dict[str, object] = {
        "rule_id": "restart",
        "trigger": "level 2",
        "method": "POST",
        "url": "https://runner.example.com/job/restart/secret-token?x=1",
        "signed": True,
    }
    base.update(fields)
    return notification_pb2.AutomationAction(**base)  # type: ignore[arg-type]


def test_a_signed_action_carries_a_webhook_signature_and_its_key() -> None:
    body = b'{"incident": "inc-1"}'
    headers = headers_for(action(), "automation/inc-1/restart/level-2", body, b"s3cret", 1000)
    assert headers["Idempotency-Key"] == "automation/inc-1/restart/level-2"
    assert headers["Content-Type"] == "application/json"
    assert verify(b"s3cret", body, headers[SIGNATURE_HEADER], now=1000)
    assert not verify(b"other", body, headers[SIGNATURE_HEADER], now=1000)
    unsigned = headers_for(action(signed=False, content_type="text/plain"), "k", body, None, 1)
    assert SIGNATURE_HEADER not in unsigned and unsigned["Content-Type"] == "text/plain"


def test_a_signed_action_without_the_secret_is_refused_for_good() -> None:
    with pytest.raises(DeliveryError, match="signing secret is not set") as refused:
        headers_for(action(), "k", b"", None, 1)
    assert refused.value.retryable is False


def test_the_timeline_names_the_request_without_its_secret_path() -> None:
    shown = describe(action())
    assert shown.startswith("rule restart (level 2): POST https://runner.example.com")
    assert "secret-token" not in shown


def test_an_action_request_without_its_url_or_rule_is_a_bad_record() -> None:
    request = notification_pb2.NotificationRequest(
        idempotency_key="k", incident=E.Incident(incident_id="inc-1"), automation=action(url="")
    )
    with pytest.raises(BadRecord, match=r"automation\.url: missing"):
        parse(request.SerializeToString())
    request.automation.url = "https://runner.example.com/"
    request.automation.rule_id = ""
    with pytest.raises(BadRecord, match=r"automation\.rule_id: missing"):
        parse(request.SerializeToString())


def test_an_approval_record_round_trips_and_an_approved_copy_names_who() -> None:
    request = notification_pb2.NotificationRequest(
        idempotency_key="automation/inc-1/restart/level-2",
        incident=E.Incident(incident_id="inc-1", service_id="web"),
        automation=action(requires_approval=True),
    )
    pending = approvals.request(request.idempotency_key, "restart", "inc-1", T0, timedelta(hours=1))
    back, stored = decode(encode(pending, request))
    assert back == pending and stored == request
    decided = approvals.decide(pending, "approve", "mia", T0 + timedelta(minutes=1), "ok")
    back, _ = decode(encode(decided, request))
    assert back == decided and back.decided_at == T0 + timedelta(minutes=1)
    runnable = approved(stored, "mia")
    assert runnable.automation.approved_by == "mia"
    assert not request.automation.approved_by  # a copy: the stored request is unchanged


class _Idempotency:
    """Answers the claims given, then fails as Redis would; records what was forgotten."""

    def __init__(self, *claims: Claim) -> None:
        self.claims = list(claims)
        self.forgotten: list[str] = []

    async def admit(self, job: Job) -> Claim:
        if not self.claims:
            raise ConnectionError("redis is down")
        return self.claims.pop(0)

    def forget(self, job: Job) -> None:
        self.forgotten.append(job.request.idempotency_key)


def stages_of(fake: SimpleNamespace) -> SimpleNamespace:
    """The fake pipeline's stages with the real Pipeline.once over them."""
    fake.once = functools.partial(Pipeline.once, fake)  # type: ignore[arg-type]
    return fake


async def _fail_with(idempotency: _Idempotency) -> None:
    clock = FakeClock(T0)
    runner = AutomationRunner(
        stages_of(SimpleNamespace(idempotency=idempotency)),  # type: ignore[arg-type]
        clock,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        secret=None,
    )
    job = Job(
        notification_pb2.NotificationRequest(
            idempotency_key="automation/inc-1/restart/triggered",
            incident=E.Incident(incident_id="inc-1"),
            automation=action(),
        )
    )
    task = asyncio.create_task(runner.handle(job))
    while not task.done():
        await asyncio.sleep(0)
        clock.advance(1.0)
    with pytest.raises(ConnectionError):
        await task
    await runner.close()


async def test_a_copy_that_waited_behind_another_does_not_free_the_key_when_it_fails() -> None:
    # A redelivered copy waits IN_FLIGHT behind the first; Redis fails under it. Freeing
    # the key would let its retry take it and run the action a second time.
    waiting = _Idempotency(Claim.IN_FLIGHT, Claim.IN_FLIGHT)
    await _fail_with(waiting)
    assert waiting.forgotten == []


async def test_a_job_that_took_the_key_gives_it_back_when_it_fails() -> None:
    class _Failing(_Idempotency):
        async def renew(self, jobs: list[Job]) -> None:
            raise ConnectionError("redis is down")

    took = _Failing(Claim.ACQUIRED)
    clock = FakeClock(T0)
    stages = stages_of(
        SimpleNamespace(
            idempotency=took,
            retry=SimpleNamespace(run=lambda attempt, on_retry: attempt(1)),
        )
    )
    runner = AutomationRunner(
        stages,  # type: ignore[arg-type]
        clock,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        secret=None,
    )
    job = Job(
        notification_pb2.NotificationRequest(
            idempotency_key="automation/inc-1/restart/triggered",
            incident=E.Incident(incident_id="inc-1"),
            automation=action(),
        )
    )
    with pytest.raises(ConnectionError):
        await runner.handle(job)
    await runner.close()
    assert took.forgotten == ["automation/inc-1/restart/triggered"]


def test_insight_leaves_automation_outcomes_out_of_its_paging_facts() -> None:
    page = notification_pb2.NotificationStatus(request_id="r", channel="webhook")
    run = notification_pb2.NotificationStatus(request_id="r", channel="automation")
    assert is_page(page) and not is_page(run)
