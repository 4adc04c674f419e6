"""The notification paths that carry throughput, against the real Redis (no services):

- many pages' Redis commands go out as one pipeline, each caller gets its own results and
  only its own errors;
- idempotency claims through that batcher: a delivered key is a duplicate for every worker,
  another worker's lease means in flight, a lease this process left behind after an error
  is taken back at once;
- the pipeline with a fake provider, escalation and producer: a page is delivered once, a
  replay is a DUPLICATE that pages nobody, its Kafka records are handed over but not
  awaited, a bundle's jobs all get their outcome, a failing peer ends in a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from opentelemetry import context, trace
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from tocsin.v1 import incident_pb2, notification_pb2, oncall_service_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.secrets import generate_secret
from tocsin_common.topics import (
    INCIDENTS_COMMANDS,
    NOTIFICATIONS_DEADLETTER,
    NOTIFICATIONS_STATUS,
    Topic,
)
from tocsin_notification.breaker import BreakerRegistry
from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.contacts import ContactDirectory, ContactsUnavailable, LookupResult, Ref
from tocsin_notification.idempotency import Claim, IdempotencyStore, LeaseLost
from tocsin_notification.links import KeyRing, LinkSigner
from tocsin_notification.pipeline import Job, Pipeline
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.idempotency_stage import IdempotencyStage
from tocsin_notification.pipeline.ratelimit_stage import RateLimitStage
from tocsin_notification.pipeline.record_stage import RecordStage
from tocsin_notification.pipeline.render_stage import RenderStage
from tocsin_notification.pipeline.retry_stage import RetryStage
from tocsin_notification.pipeline.send_stage import SendStage
from tocsin_notification.providers.base import DeliveryError, Page
from tocsin_notification.ratelimit import SlidingWindowLimit
from tocsin_notification.ratelimit_store import RedisRateLimitLog
from tocsin_notification.redis_batch import CommandBatcher
from tocsin_notification.render import Renderer
from tocsin_notification.retry_policy import RetryPolicy

from tests.integration.harness import infra_from_env

pytestmark = pytest.mark.integration

Outcome = notification_pb2.DeliveryOutcome
T = TypeVar("T")


@pytest.fixture
async def redis() -> Any:
    _, redis_url = infra_from_env()
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def key() -> str:
    return f"throughput-test:{uuid.uuid4()}"


# --- the batcher -------------------------------------------------------------------------


async def test_concurrent_commands_share_one_pipeline_and_get_their_own_results(
    redis: Redis,
) -> None:
    batcher = CommandBatcher(redis)
    keys = [key() for _ in range(200)]

    async def set_then_get(n: int) -> list[Any]:
        def commands(pipe: Any) -> None:
            pipe.set(keys[n], f"value-{n}", ex=60)
            pipe.get(keys[n])

        return await batcher.run(commands)

    results = await asyncio.gather(*(set_then_get(n) for n in range(200)))
    assert results == [[True, f"value-{n}".encode()] for n in range(200)]
    assert batcher.batches == 1 and batcher.commands == 400
    # A lone command later goes out on its own, at once.
    assert await batcher.run(lambda pipe: pipe.get(keys[7])) == [b"value-7"]
    assert batcher.batches == 2


async def test_a_failing_command_fails_only_its_caller(redis: Redis) -> None:
    batcher = CommandBatcher(redis)
    a_list, fine = key(), key()
    await redis.rpush(a_list, b"x")
    await redis.expire(a_list, 60)
    wrong = batcher.run(lambda pipe: pipe.incr(a_list))  # WRONGTYPE
    right = batcher.run(lambda pipe: pipe.set(fine, b"ok", ex=60))
    results = await asyncio.gather(wrong, right, return_exceptions=True)
    assert isinstance(results[0], ResponseError)
    assert results[1] == [True]
    assert await redis.get(fine) == b"ok"


async def test_a_dead_connection_fails_every_caller_of_the_batch() -> None:
    batcher = CommandBatcher(Redis.from_url("redis://127.0.0.1:1/0"))
    results = await asyncio.gather(
        *(batcher.run(lambda pipe: pipe.get("k")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)


# --- idempotency claims ------------------------------------------------------------------


async def test_claims_across_two_workers(redis: Redis) -> None:
    batcher = CommandBatcher(redis)
    a = IdempotencyStore(batcher, owner=f"a-{uuid.uuid4()}")
    b = IdempotencyStore(batcher, owner=f"b-{uuid.uuid4()}")
    page = str(uuid.uuid4())
    assert await a.claim(page) is Claim.ACQUIRED
    assert await b.claim(page) is Claim.IN_FLIGHT
    assert await a.claim(page) is Claim.IN_FLIGHT  # a page of `a` still works on it
    await a.delivered(page)
    assert await b.claim(page) is Claim.DELIVERED
    assert await a.claim(page) is Claim.DELIVERED
    assert await redis.ttl(f"tocsin:page:{page}") > 29 * 24 * 3600


async def test_a_released_claim_may_be_taken_by_anyone(redis: Redis) -> None:
    batcher = CommandBatcher(redis)
    a = IdempotencyStore(batcher, owner=f"a-{uuid.uuid4()}")
    b = IdempotencyStore(batcher, owner=f"b-{uuid.uuid4()}")
    page = str(uuid.uuid4())
    assert await a.claim(page) is Claim.ACQUIRED
    await a.release(page)
    assert await b.claim(page) is Claim.ACQUIRED


async def test_a_lease_left_behind_by_an_error_is_taken_back_at_once_by_its_owner(
    redis: Redis,
) -> None:
    batcher = CommandBatcher(redis)
    a = IdempotencyStore(batcher, owner=f"a-{uuid.uuid4()}")
    b = IdempotencyStore(batcher, owner=f"b-{uuid.uuid4()}")
    page = str(uuid.uuid4())
    assert await a.claim(page) is Claim.ACQUIRED
    a.forget(page)  # its page failed with an error, without an outcome
    assert await b.claim(page) is Claim.IN_FLIGHT  # others still wait for the lease
    assert await a.claim(page) is Claim.ACQUIRED  # the retry here need not wait
    assert a.held(page)


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_lease_that_ran_out_and_was_claimed_elsewhere_is_not_renewed(
    redis: Redis,
) -> None:
    """A page held here past its lease (in a bundle, behind a rate limit) that another
    worker claimed and sent after a rebalance: renewing must not write this process's
    lease over the other's "delivered" mark (the failure suite saw 118 pages sent twice)."""
    batcher = CommandBatcher(redis)
    clock = Monotonic()
    a = IdempotencyStore(batcher, owner=f"a-{uuid.uuid4()}", monotonic=clock)
    b = IdempotencyStore(batcher, owner=f"b-{uuid.uuid4()}")
    sent, sending = str(uuid.uuid4()), str(uuid.uuid4())
    for page in (sent, sending):
        assert await a.claim(page) is Claim.ACQUIRED
        await redis.delete(f"tocsin:page:{page}")  # its lease ran out
        assert await b.claim(page) is Claim.ACQUIRED
    await b.delivered(sent)
    clock.now = 31.0
    assert await a.renew(sent) is False
    assert await redis.get(f"tocsin:page:{sent}") == b"delivered"
    assert await a.renew(sending) is False
    await a.release(sending)  # not its lease: b's stays
    assert await a.claim(sending) is Claim.IN_FLIGHT
    assert await b.claim(sending) is Claim.IN_FLIGHT  # b's own page still works on it
    b.forget(sending)
    assert await b.claim(sending) is Claim.ACQUIRED


async def test_a_lease_renewed_in_time_or_run_out_unclaimed_stays_ours(redis: Redis) -> None:
    batcher = CommandBatcher(redis)
    clock = Monotonic()
    a = IdempotencyStore(batcher, owner=f"a-{uuid.uuid4()}", monotonic=clock)
    b = IdempotencyStore(batcher, owner=f"b-{uuid.uuid4()}")
    page = str(uuid.uuid4())
    assert await a.claim(page) is Claim.ACQUIRED
    clock.now = 11.0
    await redis.expire(f"tocsin:page:{page}", 5)
    assert await a.renew(page) is True
    assert await redis.ttl(f"tocsin:page:{page}") > 25  # extended to a full lease
    clock.now = 22.0
    await redis.delete(f"tocsin:page:{page}")  # ran out, nobody claimed it
    assert await a.renew(page) is True
    assert await b.claim(page) is Claim.IN_FLIGHT


async def test_many_claims_of_one_key_at_once_acquire_exactly_one(redis: Redis) -> None:
    batcher = CommandBatcher(redis)
    stores = [IdempotencyStore(batcher, owner=f"w{n}-{uuid.uuid4()}") for n in range(20)]
    page = str(uuid.uuid4())
    claims = await asyncio.gather(*(s.claim(page) for s in stores))
    assert claims.count(Claim.ACQUIRED) == 1
    assert claims.count(Claim.IN_FLIGHT) == 19


# --- the pipeline ------------------------------------------------------------------------


class Producer:
    """Records what would go to Kafka; acknowledges only when told."""

    def __init__(self) -> None:
        self.records: list[tuple[Topic, str, Any]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def enqueue(self, topic: Topic, key: str, message: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.records.append((topic, key, message))
        self.futures.append(future)
        return future

    def acknowledge(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(None)

    def on(self, topic: Topic) -> list[Any]:
        return [m for t, _, m in self.records if t == topic]


class PreparedProducer(Producer):
    """Also takes records as prepared (EventProducer.enqueue_prepared): bytes and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def enqueue_prepared(
        self, topic: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.prepared.append((topic, key, value, headers))
        self.futures.append(future)
        return future


class Hook:
    channel = "webhook"

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.failure: DeliveryError | None = None

    async def send(self, page: Page) -> str:
        if self.failure is not None:
            raise self.failure
        self.pages.append(page)
        return "HTTP 200"

    async def close(self) -> None:
        pass


class Escalation:
    def __init__(self) -> None:
        self.calls = 0
        self.batches: list[int] = []  # look-ups per GetContactMethods call
        self.unreachable_for = 0  # look-ups answered UNAVAILABLE before it is back

    async def many(self, refs: Sequence[Ref], links: Sequence[Any]) -> list[LookupResult]:
        self.batches.append(len(refs))
        return [await self.lookup(user_id, method) for user_id, method in refs]

    async def lookup(
        self, user_id: str, contact_method_id: str
    ) -> oncall_service_pb2.ContactMethod:
        self.calls += 1
        if self.unreachable_for > 0:
            self.unreachable_for -= 1
            raise ContactsUnavailable("contact look-up failed: UNAVAILABLE restarting")
        return oncall_service_pb2.ContactMethod(
            user_id=user_id,
            contact_method_id=contact_method_id,
            type="webhook",
            address=f"https://hooks.example/{user_id}",
            user_name=user_id.title(),
        )


def build(
    redis: Redis,
    producer: Producer,
    hook: Hook,
    escalation: Escalation,
    clock: FakeClock,
    *,
    batched: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
) -> Pipeline:
    policy = BundlePolicy(SlidingWindowLimit(20, 60), 2.0)
    batcher = CommandBatcher(redis)
    return Pipeline(
        idempotency=IdempotencyStage(IdempotencyStore(batcher, monotonic=monotonic)),
        ratelimit=RateLimitStage(policy),
        bundle=BundleStage(policy, clock),
        render=RenderStage(
            Renderer(),
            LinkSigner(KeyRing.single(generate_secret().encode()), timedelta(hours=1)),
            "http://tocsin",
            clock,
        ),
        send=SendStage(BreakerRegistry(clock, failure_threshold=5, reset_timeout_s=30), 5),
        retry=RetryStage(RetryPolicy(3, 0.5, 1.0, 5), clock, rand=lambda: 0.0),
        record=RecordStage(producer, batcher, clock),
        contacts=ContactDirectory(
            escalation.lookup, ttl_s=5, lookup_many=escalation.many if batched else None
        ),
        providers={"webhook": hook},
        clock=clock,
    )


def request(user: str) -> notification_pb2.NotificationRequest:
    incident_id = str(uuid.uuid4())
    return notification_pb2.NotificationRequest(
        request_id=str(uuid.uuid4()),
        idempotency_key=f"{incident_id}:1:0:{user}:0",
        user_id=user,
        contact_method_id="hook",
        incident=incident_pb2.Incident(
            incident_id=incident_id, service_id="svc", title=f"disk full for {user}"
        ),
    )


async def test_pages_are_delivered_once_and_a_replay_pages_nobody(redis: Redis) -> None:
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)
    users = [f"user-{uuid.uuid4().hex[:6]}-{n}" for n in range(50)]
    jobs = [Job(request(u)) for u in users]
    statuses = await asyncio.gather(*(pipeline.handle(j) for j in jobs))
    assert {s.outcome for s in statuses} == {Outcome.DELIVERY_OUTCOME_DELIVERED}
    assert sorted(p.user_id for p in hook.pages) == sorted(users)
    # Handed to Kafka (one status per page: its timeline entry goes to Redis, not through
    # correlation), not awaited by the pipeline.
    assert all(len(j.produced) == 1 and not any(f.done() for f in j.produced) for j in jobs)
    assert len(producer.on(NOTIFICATIONS_STATUS)) == 50
    assert producer.on(INCIDENTS_COMMANDS) == []
    first = jobs[0].request.incident.incident_id
    rows = await redis.lrange(f"tocsin:deliveries:{first}", 0, -1)
    assert [notification_pb2.NotificationStatus.FromString(r).outcome for r in rows] == [
        Outcome.DELIVERY_OUTCOME_DELIVERED
    ]
    # The timeline entry, in the same pipeline as the row; parked: these incidents never
    # reached escalation's projection.
    parked = await redis.lrange(f"tocsin:incident:{first}:parked", 0, -1)
    assert [incident_pb2.IncidentEvent.FromString(p).type for p in parked] == [
        incident_pb2.INCIDENT_EVENT_TYPE_NOTIFIED
    ]
    producer.acknowledge()
    assert all(f.done() for j in jobs for f in j.produced)

    replay = Job(jobs[3].request)
    status = await pipeline.handle(replay)
    assert status.outcome == Outcome.DELIVERY_OUTCOME_DUPLICATE
    assert len(hook.pages) == 50
    assert escalation.calls == 50


async def test_a_lone_page_waits_for_one_redis_round_trip_before_it_is_sent(
    redis: Redis,
) -> None:
    # The claim and the shared rate limit's read share a round trip; the rate limit's
    # write goes while the page goes; the delivered mark shares one with the outcome's row.
    producer, escalation, clock = Producer(), Escalation(), FakeClock()
    batcher = CommandBatcher(redis)
    before_send: list[int] = []

    class CountingHook(Hook):
        async def send(self, page: Page) -> str:
            before_send.append(batcher.batches)
            return await super().send(page)

    hook = CountingHook()
    pipeline = build(redis, producer, hook, escalation, clock)
    policy = BundlePolicy(SlidingWindowLimit(20, 60), 2.0)
    shared = RedisRateLimitLog(batcher, policy.limit)
    pipeline.idempotency = IdempotencyStage(IdempotencyStore(batcher))
    pipeline.ratelimit = RateLimitStage(policy, shared)
    pipeline.bundle = BundleStage(policy, clock, shared)
    pipeline.record = RecordStage(producer, batcher, clock)
    user = f"user-{uuid.uuid4().hex[:6]}"
    status = await pipeline.handle(Job(request(user)))
    await asyncio.sleep(0.05)  # the rate limit's write, if it was still on its way
    assert status.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
    assert before_send == [1]
    # claim + read, the send's count, mark + row: at most three in all (five before).
    assert batcher.batches <= 3
    assert await redis.zcard(RedisRateLimitLog.redis_key(f"{user}/hook")) == 1


async def test_a_burst_for_many_people_looks_their_contacts_up_in_one_batch(
    redis: Redis,
) -> None:
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock, batched=True)
    users = [f"user-{uuid.uuid4().hex[:6]}-{n}" for n in range(50)]
    jobs = [Job(request(u)) for u in users]
    statuses = await asyncio.gather(*(pipeline.handle(j) for j in jobs))
    assert {s.outcome for s in statuses} == {Outcome.DELIVERY_OUTCOME_DELIVERED}
    assert sorted(p.user_id for p in hook.pages) == sorted(users)
    assert sorted(p.address for p in hook.pages) == sorted(
        f"https://hooks.example/{u}" for u in users
    )
    assert escalation.batches == [50]  # the claims came back together: one call for all
    assert pipeline.contacts.calls == 1


async def test_a_burst_for_one_person_is_one_message_and_every_job_gets_its_outcome(
    redis: Redis,
) -> None:
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)
    user = f"user-{uuid.uuid4().hex[:6]}"
    first = await pipeline.handle(Job(request(user)))
    assert first.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
    held = [asyncio.create_task(pipeline.handle(Job(request(user)))) for _ in range(3)]
    for _ in range(50):
        await asyncio.sleep(0.01)
        if pipeline.bundle.held(f"{user}/hook") == 3:
            break
    assert pipeline.bundle.held(f"{user}/hook") == 3
    clock.advance(2.0)
    statuses = await asyncio.gather(*held)
    assert {s.outcome for s in statuses} == {Outcome.DELIVERY_OUTCOME_DELIVERED}
    assert len(hook.pages) == 2 and len(hook.pages[1].incidents) == 3
    assert all("one message for 3 incidents" in s.detail for s in statuses)


async def test_a_bundled_page_another_worker_claimed_meanwhile_leaves_the_message(
    redis: Redis,
) -> None:
    """Pages held in a bundle past their lease: one was claimed and sent by another worker
    meanwhile (a rebalance). The message goes out without it, and its retry here finds the
    other worker's outcome: paged once."""
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    monotonic = Monotonic()
    pipeline = build(redis, producer, hook, escalation, clock, monotonic=monotonic)
    other = IdempotencyStore(CommandBatcher(redis), owner=f"other-{uuid.uuid4()}")
    user = f"user-{uuid.uuid4().hex[:6]}"
    assert (await pipeline.handle(Job(request(user)))).outcome == (
        Outcome.DELIVERY_OUTCOME_DELIVERED
    )
    jobs = [Job(request(user)) for _ in range(3)]
    held = [asyncio.create_task(pipeline.handle(job)) for job in jobs]
    for _ in range(50):
        await asyncio.sleep(0.01)
        if pipeline.bundle.held(f"{user}/hook") == 3:
            break
    assert pipeline.bundle.held(f"{user}/hook") == 3
    taken = jobs[1].request.idempotency_key
    await redis.delete(f"tocsin:page:{taken}")  # its lease ran out while held
    assert await other.claim(taken) is Claim.ACQUIRED
    await other.delivered(taken)
    monotonic.now = 31.0
    clock.advance(2.0)
    outcomes = await asyncio.gather(*held, return_exceptions=True)
    assert isinstance(outcomes[1], LeaseLost)
    assert [o.outcome for o in (outcomes[0], outcomes[2])] == [  # type: ignore[union-attr]
        Outcome.DELIVERY_OUTCOME_DELIVERED
    ] * 2
    assert len(hook.pages) == 2
    assert {i.incident_id for i in hook.pages[1].incidents} == {
        jobs[0].request.incident.incident_id,
        jobs[2].request.incident.incident_id,
    }
    retried = await pipeline.handle(Job(jobs[1].request))
    assert retried.outcome == Outcome.DELIVERY_OUTCOME_DUPLICATE
    assert len(hook.pages) == 2


async def with_clock_running(work: Awaitable[T], clock: FakeClock) -> T:
    """``work``'s result, moving the fake clock a second every 10 ms until it is done."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.sleep(0.01)
        clock.advance(1.0)
    return task.result()


async def test_a_failing_peer_is_retried_then_dead_lettered_and_may_be_replayed(
    redis: Redis,
) -> None:
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)
    hook.failure = DeliveryError("HTTP 503", retryable=True)
    job = Job(request(f"user-{uuid.uuid4().hex[:6]}"))
    status = await with_clock_running(pipeline.handle(job), clock)
    assert status.outcome == Outcome.DELIVERY_OUTCOME_FAILED and status.attempt == 3
    outcomes = [s.outcome for s in producer.on(NOTIFICATIONS_STATUS)]
    assert outcomes.count(Outcome.DELIVERY_OUTCOME_RETRYING) == 2
    assert len(producer.on(NOTIFICATIONS_DEADLETTER)) == 1
    assert escalation.calls == 3  # a retried attempt looks the contact up afresh
    # The claim was given back: a later replay may page.
    hook.failure = None
    # The give-back is a batched Redis command: the replay may meet the claim for a moment
    # and wait on the (injected) clock for it, so the clock keeps moving here too.
    replayed = await with_clock_running(pipeline.handle(Job(job.request)), clock)
    assert replayed.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED


class FlakyDeliveredMark(IdempotencyStage):
    """Redis fails the first 'delivered' mark (as when it is killed right after a send)."""

    def __init__(self, store: IdempotencyStore) -> None:
        super().__init__(store)
        self.failures = 1

    def delivered_soon(self, jobs: list[Job]) -> asyncio.Future[list[Any]]:
        if not self.failures:
            return super().delivered_soon(jobs)
        self.failures -= 1
        failed: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        failed.set_exception(RedisConnectionError("Connection closed by server."))
        return failed


async def test_a_page_sent_whose_delivered_mark_fails_is_not_sent_again(redis: Redis) -> None:
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)
    flaky = FlakyDeliveredMark(IdempotencyStore(CommandBatcher(redis)))
    pipeline.idempotency = flaky
    job = Job(request(f"user-{uuid.uuid4().hex[:6]}"))
    handling = asyncio.create_task(pipeline.handle(job))
    for _ in range(100):  # the mark failed once; the pipeline waits to mark it again
        await asyncio.sleep(0.01)
        if not flaky.failures and len(hook.pages) == 1:
            break
    clock.advance(1.0)
    status = await handling
    assert status.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
    assert len(hook.pages) == 1
    # Marked after all: a redelivery of the request pages nobody.
    replay = await pipeline.handle(Job(job.request))
    assert replay.outcome == Outcome.DELIVERY_OUTCOME_DUPLICATE
    assert len(hook.pages) == 1


async def test_without_exported_spans_records_are_handed_over_prepared_with_the_trace(
    redis: Redis,
) -> None:
    # No PRODUCER span per record (nobody would see it), but the trace context of the
    # request still travels in the records' headers.
    producer, clock = PreparedProducer(), FakeClock()
    stage = RecordStage(producer, CommandBatcher(redis), clock, spans=False)
    job = Job(request(f"user-{uuid.uuid4().hex[:6]}"))
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    parent = trace.NonRecordingSpan(
        trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    token = context.attach(trace.set_span_in_context(parent))
    try:
        status = await stage.record(job, "webhook", Outcome.DELIVERY_OUTCOME_DELIVERED, "HTTP 200")
    finally:
        context.detach(token)
    assert producer.records == []  # nothing through enqueue (and its span)
    topics = [topic for topic, _, _, _ in producer.prepared]
    assert topics == [NOTIFICATIONS_STATUS.name]
    _, key, value, headers = producer.prepared[0]
    assert key == status.incident_id.encode()
    assert value is not None
    assert notification_pb2.NotificationStatus.FromString(value) == status
    traceparent = dict(headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == format(trace_id, "032x")
    assert len(job.produced) == 1


async def test_a_page_waits_for_a_restarting_escalation_without_spending_its_attempts(
    redis: Redis,
) -> None:
    """Escalation unreachable for longer than all the retries take: the page waits for it
    (its lease renewed) and is delivered at the first attempt, instead of given up."""
    producer, hook, escalation, clock = Producer(), Hook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)  # 3 attempts at most
    escalation.unreachable_for = 8
    job = Job(request(f"user-{uuid.uuid4().hex[:6]}"))
    handling = asyncio.create_task(pipeline.handle(job))
    while not handling.done():
        clock.advance(timedelta(seconds=1))
        await asyncio.sleep(0.01)
    status = handling.result()
    assert status.outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
    assert status.attempt == 1
    assert [p.user_id for p in hook.pages] == [job.request.user_id]
    assert escalation.calls == 9


class BlockingHook(Hook):
    """Holds every send until released: a page being sent (its outcome not known yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.sending = asyncio.Event()

    async def send(self, page: Page) -> str:
        self.sending.set()
        await self.release.wait()
        return await super().send(page)


async def test_a_redelivered_copy_that_gives_up_leaves_the_sending_page_its_key(
    redis: Redis,
) -> None:
    # A rebalance hands this process the same request again while its first copy is being
    # sent (or waits in a bundle): the copy waits (IN_FLIGHT). If the copy then fails
    # (cancelled, a store error), it must not free the key the first copy holds: the
    # copy's retry would take it and page the person a second time.
    producer, hook, escalation, clock = Producer(), BlockingHook(), Escalation(), FakeClock()
    pipeline = build(redis, producer, hook, escalation, clock)
    req = request(f"user-{uuid.uuid4().hex[:6]}")
    first = asyncio.create_task(pipeline.handle(Job(req)))
    await asyncio.wait_for(hook.sending.wait(), 5)
    copy = asyncio.create_task(pipeline.handle(Job(req)))
    for _ in range(20):  # let the copy claim (IN_FLIGHT) and go to sleep on the clock
        await asyncio.sleep(0.01)
    copy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await copy
    assert pipeline.idempotency.store.held(req.idempotency_key)
    retry = asyncio.create_task(pipeline.handle(Job(req)))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not retry.done()  # waiting for the first copy's outcome, not sending
    hook.release.set()
    assert (await first).outcome == Outcome.DELIVERY_OUTCOME_DELIVERED
    clock.advance(timedelta(seconds=1))
    assert (await asyncio.wait_for(retry, 5)).outcome == Outcome.DELIVERY_OUTCOME_DUPLICATE
    assert len(hook.pages) == 1
