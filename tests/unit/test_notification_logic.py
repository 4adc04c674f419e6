"""Pure delivery logic with a FakeClock: retry policy and backoff, the circuit breaker,
the rate-limit window, bundling decisions, offsets, templates (signed links:
test_notification_links.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from tocsin.v1 import notification_pb2, oncall_service_pb2
from tocsin_common.clock import FakeClock
from tocsin_notification.breaker import BreakerRegistry, BreakerState, CircuitBreaker, endpoint_of
from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.links import KeyRing, LinkKey, LinkSigner
from tocsin_notification.offsets import OffsetTracker
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.job import Job
from tocsin_notification.pipeline.render_stage import RenderStage
from tocsin_notification.pipeline.retry_stage import RetryStage
from tocsin_notification.providers.base import DeliveryError, IncidentLine
from tocsin_notification.providers.http import classify
from tocsin_notification.providers.webhook import payload
from tocsin_notification.ratelimit import SlidingWindowLimit
from tocsin_notification.render import Renderer, runbook_of
from tocsin_notification.retry_policy import RetryPolicy

# --- retry policy ------------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.backoff(3, rand=lambda: 0.0) == 0.0  # full jitter: anywhere from zero ...
    assert policy.backoff(3, rand=lambda: 0.999) == pytest.approx(1.998)  # ... to the ceiling
    assert all(0 <= policy.backoff(5) <= 4.0 for _ in range(200))


def test_retry_only_retryable_failures_and_only_up_to_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, retryable=True)
    assert policy.should_retry(2, retryable=True)
    assert not policy.should_retry(3, retryable=True)
    assert not policy.should_retry(1, retryable=False)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (429, True), (400, False), (401, False), (404, False)],
)
def test_http_status_classification(status: int, retryable: bool) -> None:
    error = classify(status)
    assert error is not None and error.retryable is retryable
    assert classify(200) is None and classify(204) is None


async def test_retry_stage_backs_off_on_the_clock_and_keeps_history() -> None:
    clock = FakeClock()
    stage = RetryStage(RetryPolicy(max_attempts=4, base_delay_s=1.0), clock, rand=lambda: 1.0)
    calls: list[float] = []
    waits: list[float] = []

    async def attempt(n: int) -> str:
        calls.append(clock.now().timestamp())
        if n < 3:
            raise DeliveryError("HTTP 503", retryable=True)
        return "HTTP 200"

    async def on_retry(failed: object, wait: float) -> None:
        waits.append(wait)

    task = asyncio.create_task(stage.run(attempt, on_retry))
    for _ in range(10):
        await asyncio.sleep(0)
        clock.advance(0.5)
    result = await asyncio.wait_for(task, 1)
    assert result.receipt == "HTTP 200" and result.attempts == 3
    assert waits == [1.0, 2.0]  # base * 2^(n-1), with rand()=1
    assert calls[1] - calls[0] >= 1.0 and calls[2] - calls[1] >= 2.0
    assert [a.error for a in result.history] == ["HTTP 503", "HTTP 503"]


async def test_retry_stage_does_not_retry_a_4xx() -> None:
    stage = RetryStage(RetryPolicy(max_attempts=5), FakeClock())
    calls = 0

    async def attempt(n: int) -> str:
        nonlocal calls
        calls += 1
        raise DeliveryError("HTTP 400", retryable=False)

    result = await stage.run(attempt)
    assert calls == 1 and not result.delivered
    assert result.history[0].retryable is False


async def test_retry_stage_gives_up_after_the_last_attempt() -> None:
    clock = FakeClock()
    stage = RetryStage(RetryPolicy(max_attempts=3, base_delay_s=0.1), clock)

    async def attempt(n: int) -> str:
        raise DeliveryError("HTTP 500", retryable=True)

    task = asyncio.create_task(stage.run(attempt))
    for _ in range(20):
        await asyncio.sleep(0)
        clock.advance(1)
    result = await asyncio.wait_for(task, 1)
    assert [a.attempt for a in result.history] == [1, 2, 3] and not result.delivered


# --- circuit breaker ---------------------------------------------------------------------


def test_breaker_opens_after_threshold_then_half_opens_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failure_threshold=3, reset_timeout_s=30)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # one probe ...
    assert not breaker.allow()  # ... at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_failed_probe_opens_the_breaker_for_another_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock, failure_threshold=1, reset_timeout_s=10)
    breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker = CircuitBreaker(FakeClock(), failure_threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_one_breaker_per_endpoint() -> None:
    registry = BreakerRegistry(FakeClock(), failure_threshold=1)
    registry.for_endpoint(endpoint_of("http://a.example:80/x")).record_failure()
    assert not registry.for_endpoint(endpoint_of("http://A.example:80/other")).allow()
    assert registry.for_endpoint(endpoint_of("http://b.example/x")).allow()
    assert endpoint_of("alice@Example.com") == "example.com"
    assert endpoint_of("+15551234567") == "+15551234567"


# --- rate limit and bundling -------------------------------------------------------------


def test_sliding_window_limit() -> None:
    clock = FakeClock()
    limit = SlidingWindowLimit(limit=2, window_s=60)
    t0 = clock.now()
    assert limit.next_allowed("cm", t0) == t0
    limit.record("cm", t0)
    limit.record("cm", t0 + timedelta(seconds=10))
    assert limit.next_allowed("cm", t0 + timedelta(seconds=20)) == t0 + timedelta(seconds=60)
    assert limit.next_allowed("other", t0) == t0  # per contact method
    assert limit.next_allowed("cm", t0 + timedelta(seconds=60)) == t0 + timedelta(seconds=60)
    limit.forget_idle(t0 + timedelta(seconds=200))
    assert limit.next_allowed("cm", t0 + timedelta(seconds=200)) == t0 + timedelta(seconds=200)


def test_bundle_policy_sends_a_lone_page_at_once_and_holds_a_burst() -> None:
    clock = FakeClock()
    policy = BundlePolicy(SlidingWindowLimit(limit=100, window_s=60), window_s=2)
    t0 = clock.now()
    assert policy.send_at("alice/sms", t0) == t0
    policy.sent("alice/sms", t0)
    assert policy.send_at("alice/sms", t0 + timedelta(seconds=0.5)) == t0 + timedelta(seconds=2)
    assert policy.send_at("bob/sms", t0) == t0
    assert policy.send_at("alice/sms", t0 + timedelta(seconds=3)) == t0 + timedelta(seconds=3)


def test_bundle_policy_waits_for_the_rate_limit() -> None:
    clock = FakeClock()
    policy = BundlePolicy(SlidingWindowLimit(limit=1, window_s=60), window_s=2)
    t0 = clock.now()
    policy.sent("k", t0)
    assert policy.send_at("k", t0 + timedelta(seconds=5)) == t0 + timedelta(seconds=60)


def test_bundle_policy_forgets_idle_contact_methods_as_it_goes() -> None:
    clock = FakeClock()
    policy = BundlePolicy(SlidingWindowLimit(limit=2, window_s=60), window_s=2)
    t0 = clock.now()
    for n in range(1000):  # a thousand people paged once each
        policy.sent(f"user-{n}/sms", t0)
    policy.sent("k", t0 + timedelta(seconds=30))
    assert policy.limit.keys() == 1001  # within the horizon: all kept
    policy.sent("k", t0 + timedelta(seconds=61))
    assert policy.limit.keys() == 1  # one horizon on: only the one still within it
    # ... and what is kept still decides: "k" had 2 in the last 60 s
    assert policy.send_at("k", t0 + timedelta(seconds=62)) == t0 + timedelta(seconds=90)
    assert policy.send_at("user-1/sms", t0 + timedelta(seconds=62)) == t0 + timedelta(seconds=62)


def _job(incident: str, user: str = "alice", cm: str = "alice-sms") -> Job:
    return Job(
        notification_pb2.NotificationRequest(
            idempotency_key=f"{incident}:1:0:{user}:0", user_id=user, contact_method_id=cm
        )
    )


async def test_bundle_stage_turns_a_burst_into_one_message_and_drops_nothing() -> None:
    clock = FakeClock()
    stage = BundleStage(BundlePolicy(SlidingWindowLimit(3, 60), window_s=2), clock)
    sent: list[list[str]] = []

    async def send(jobs: list[Job]) -> None:
        sent.append([j.request.idempotency_key.split(":")[0] for j in jobs])

    assert await stage.submit(_job("i1"), send) is False  # first page: at once
    for name in ("i2", "i3", "i4"):
        assert await stage.submit(_job(name), send) is True  # held for the window
    await stage.submit(_job("x1", user="bob", cm="bob-sms"), send)  # bob is not held
    assert sent == [["i1"], ["x1"]]
    clock.advance(2)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent == [["i1"], ["x1"], ["i2", "i3", "i4"]]
    # Rate limit 3/min: one message left for alice this minute, then pages wait for it.
    await stage.submit(_job("i5"), send)
    clock.advance(2)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent[-1] == ["i5"]
    await stage.submit(_job("i6"), send)
    await stage.submit(_job("i7"), send)
    clock.advance(30)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent[-1] == ["i5"] and stage.held("alice/alice-sms") == 2  # limited: delayed
    clock.advance(30)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent[-1] == ["i6", "i7"]  # never dropped


# --- offsets -----------------------------------------------------------------------------


def test_offsets_commit_only_a_finished_prefix() -> None:
    tracker = OffsetTracker()
    assert tracker.committable() is None
    for offset in (5, 6, 7):
        tracker.started(offset)
    tracker.finished(6)
    tracker.finished(7)
    assert tracker.committable() == 5
    tracker.finished(5)
    assert tracker.committable() == 8 and tracker.in_flight == 0


# --- templates ---------------------------------------------------------------------------


def _line(n: int, **kw: str) -> IncidentLine:
    fields = {
        "incident_id": f"inc-{n}",
        "service_id": "checkout",
        "title": f"checkout 5xx above 5% #{n}",
        "status": "triggered",
        "urgency": "high",
        "severity": "critical",
        "since": "2026-01-01T08:30:00+00:00",
        "ack_url": f"http://t/ack/{n}",
        "resolve_url": f"http://t/res/{n}",
    }
    fields.update(kw)
    return IncidentLine(**fields)


def test_templates_say_what_where_since_how_bad_runbook_and_links() -> None:
    renderer = Renderer()
    line = _line(1, runbook_url="https://wiki/runbooks/checkout")
    for channel in ("sms", "email", "slack", "teams", "webhook"):
        subject, text = renderer.render(channel, (line,))
        assert "checkout" in subject or "checkout" in text
        for needle in ("checkout 5xx above 5% #1", "08:30", "http://t/ack/1", "http://t/res/1"):
            assert needle in text, (channel, needle, text)
        assert "https://wiki/runbooks/checkout" in text
        assert "HIGH" in text.upper()
    subject, text = renderer.render("sms", (line,))
    assert len(text) < 400  # short enough for a phone
    _, spoken = renderer.render("voice", (line,))
    assert "http" not in spoken and "checkout 5xx" in spoken


def test_a_bundle_lists_every_incident() -> None:
    subject, text = Renderer().render("email", (_line(1), _line(2), _line(3)))
    assert subject.startswith("[3 incidents]")
    for n in (1, 2, 3):
        assert f"#{n}" in text and f"http://t/ack/{n}" in text


def test_runbook_from_labels() -> None:
    assert runbook_of({"runbook_url": "https://r/1"}) == "https://r/1"
    assert runbook_of({"runbook": "not a url"}) == ""
    assert runbook_of({}) == ""


# --- reminders (e.g. no public status update for a while) --------------------------------


def _reminder_job(incident: str = "inc-1", user: str = "alice", cm: str = "alice-sms") -> Job:
    request = notification_pb2.NotificationRequest(
        idempotency_key=f"{incident}:reminder:t:{user}:0",
        user_id=user,
        contact_method_id=cm,
        reminder=notification_pb2.Reminder(
            kind="status_update_due",
            text="No public status update has been posted for 30 minutes: post one.",
        ),
    )
    request.incident.incident_id = incident
    request.incident.service_id = "checkout"
    request.incident.title = "checkout 5xx above 5%"
    return Job(request)


def test_a_reminder_is_never_bundled_with_pages() -> None:
    assert _job("i1").bundle_key == "alice/alice-sms"
    assert _reminder_job().bundle_key == "alice/alice-sms/reminder"


def test_a_reminder_renders_its_text_and_the_incident_link_on_every_channel() -> None:
    renderer = Renderer()
    line = _line(1, reminder="No public status update has been posted for 30 minutes.")
    line = IncidentLine(**{**vars(line), "incident_url": "http://api/console/incidents/inc-1"})
    for channel in ("sms", "email", "slack", "teams", "webhook"):
        subject, text = renderer.render(channel, (line,), reminder=True)
        assert subject.startswith("[REMINDER]"), (channel, subject)
        assert "No public status update has been posted for 30 minutes." in text, channel
        assert "http://api/console/incidents/inc-1" in text, (channel, text)
        assert "http://t/ack/1" not in text  # a reminder is not a page to acknowledge
    _, spoken = renderer.render("voice", (line,), reminder=True)
    assert "http" not in spoken and "30 minutes" in spoken


def test_the_render_stage_links_a_reminder_to_the_incident_in_the_console() -> None:
    signer = LinkSigner(KeyRing((LinkKey("k1", b"k" * 32),)), timedelta(hours=1))
    stage = RenderStage(Renderer(), signer, "http://notify", FakeClock(), "https://api.example/")
    contact = oncall_service_pb2.ContactMethod(
        user_id="alice", user_name="Alice", type="webhook", address="https://hook"
    )
    page = stage.page([_reminder_job("inc/1")], contact)
    assert page.reminder == "status_update_due"
    assert page.incidents[0].incident_url == "https://api.example/console/incidents/inc%2F1"
    body = payload(page)
    assert body["event"] == "incident.reminder"
    assert body["reminder"]["text"].startswith("No public status update has been posted")
    assert body["links"]["incident"] == "https://api.example/console/incidents/inc%2F1"
    plain = stage.page([_job("i1")], contact)
    assert plain.reminder == "" and payload(plain)["event"] == "incident.page"
    assert "incident" not in payload(plain).get("links", {})
