"""The delivery pipeline, a chain of small stages, one module each:

idempotency -> rate limit -> bundle -> render -> send -> retry -> record

`Pipeline.handle(job)` returns when the job's outcome is final and recorded (delivered,
duplicate, or failed and dead-lettered), so the consumer commits its offset only then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tocsin.v1 import notification_pb2, oncall_service_pb2
from tocsin_common.clock import Clock

from tocsin_notification.contacts import ContactDirectory, ContactsUnavailable
from tocsin_notification.idempotency import Claim, LeaseLost
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.idempotency_stage import IdempotencyStage
from tocsin_notification.pipeline.job import Attempt, Job, Source, each
from tocsin_notification.pipeline.ratelimit_stage import RateLimitStage
from tocsin_notification.pipeline.record_stage import RecordStage
from tocsin_notification.pipeline.render_stage import RenderStage
from tocsin_notification.pipeline.retry_stage import RetryStage
from tocsin_notification.pipeline.send_stage import SendStage
from tocsin_notification.providers.base import DeliveryError, Provider

__all__ = ["Job", "Pipeline", "Source"]

log = logging.getLogger("tocsin.notification")

Outcome = notification_pb2.DeliveryOutcome


class Pipeline:
    def __init__(
        self,
        *,
        idempotency: IdempotencyStage,
        ratelimit: RateLimitStage,
        bundle: BundleStage,
        render: RenderStage,
        send: SendStage,
        retry: RetryStage,
        record: RecordStage,
        contacts: ContactDirectory,
        providers: Mapping[str, Provider],
        clock: Clock,
        contact_wait_s: float = 600.0,
    ) -> None:
        """``contact_wait_s``: how long a page waits for escalation to answer its contact
        look-up (escalation restarting or unreachable) before that counts as a failed
        attempt."""
        self._clock = clock
        self._contact_wait_s = contact_wait_s
        self.idempotency = idempotency
        self.ratelimit = ratelimit
        self.bundle = bundle
        self.render = render
        self.send = send
        self.retry = retry
        self.record = record
        self.contacts = contacts
        self.providers = providers

    async def handle(self, job: Job) -> notification_pb2.NotificationStatus:
        """The job's final outcome, recorded. Its Kafka records are handed to the producer
        but not awaited: they are in `job.produced`."""
        try:
            return await self._handle(job)
        except BaseException:
            # No outcome (Redis or Kafka failed under it): the caller retries the request,
            # and this process may take its own lease back at once. Unless the page still
            # waits in a bundle or is being sent: then the retry waits for that outcome.
            # And only if this job took the lease: a redelivered copy that was waiting
            # (IN_FLIGHT) behind a bundled one must not free the key under it — its retry
            # would then take the key and send the page a second time (the failure suite
            # saw a bundle of 78 sent twice after a rebalance redelivered its requests).
            if job.claimed and (job.done is None or job.done.done()):
                self.idempotency.forget(job)
            raise

    async def _handle(self, job: Job) -> notification_pb2.NotificationStatus:
        # The claim and the rate limit's read of Redis go out in one round trip. The read
        # is wasted when the page turns out a duplicate; it changes nothing.
        read_at = self._clock.now()
        read = self.ratelimit.read_commands(job.bundle_key, read_at)
        claim, read_results = await self.idempotency.admit_with(job, read)
        waited = False
        # In flight elsewhere: a worker holds the lease, or held it and died (SIGKILL)
        # before sending. Not a duplicate yet: wait until it delivers (then it is one) or
        # its lease runs out (then this page is ours to send), so no page is lost.
        while claim is Claim.IN_FLIGHT:
            await self._clock.sleep(1.0)
            claim = await self.idempotency.admit(job)
            waited = True
        if claim is not Claim.ACQUIRED:
            return await self.record.record(
                job, "", Outcome.DELIVERY_OUTCOME_DUPLICATE, claim.value
            )
        # Claimed before the rate limit's answer is looked at: should that read have
        # failed, the error below ends the job with its lease this process's to take back.
        job.claimed = True
        if waited:  # the limit read with the first claim is old now
            now = self._clock.now()
            limited_until = await self.ratelimit.limited_until(job.bundle_key, now)
        else:
            limited_until = self.ratelimit.limited_until_read(job.bundle_key, read_at, read_results)
        job.done = asyncio.get_running_loop().create_future()
        held = await self.bundle.submit(job, self._deliver)
        if held and limited_until is not None:
            await self.record.record(
                job,
                "",
                Outcome.DELIVERY_OUTCOME_RATE_LIMITED,
                f"held until {limited_until.isoformat()} and bundled",
            )
        return await job.done

    async def once(
        self,
        job: Job,
        channel: str,
        run: Callable[[], Awaitable[notification_pb2.NotificationStatus]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> notification_pb2.NotificationStatus:
        """`run` once per idempotency key, for a message that is not a page (an automation
        action, a subscriber's notice): another worker's lease is waited out (its outcome
        makes this a DUPLICATE, its lease running out makes the key ours). On an error
        there is no outcome: the consumer retries the record, and this process may take
        its own lease back at once — only a job that took the lease gives it up, as a copy
        that waited behind another must not free the key under it."""
        claim = Claim.IN_FLIGHT
        try:
            claim = await self.idempotency.admit(job)
            while claim is Claim.IN_FLIGHT:
                await sleep(1.0)
                claim = await self.idempotency.admit(job)
            if claim is not Claim.ACQUIRED:
                return await self.record.record(
                    job, channel, Outcome.DELIVERY_OUTCOME_DUPLICATE, claim.value
                )
            return await run()
        except BaseException:
            if claim is Claim.ACQUIRED:
                self.idempotency.forget(job)
            raise

    async def _deliver(self, jobs: list[Job]) -> None:
        try:
            await self._deliver_batch(jobs)
        except BaseException as e:
            for job in jobs:
                if job.done is not None and not job.done.done():
                    job.done.set_exception(e)
            if not isinstance(e, Exception):
                raise

    async def mark_delivered(self, jobs: list[Job]) -> None:
        """The message is out: mark its pages delivered, retrying until Redis takes it.

        Never raise here: a failure would end the pages without an outcome, and their
        retry — with this process taking its own lease back — would send them again (the
        failure suite caught a bundle of 20 sent twice when Redis was killed just after a
        send). While this waits, the lease (30 s from the last attempt) keeps other workers
        from sending them.
        """
        backoff = 0.1
        while True:
            try:
                await self.idempotency.delivered(jobs)
                return
            except Exception:
                log.warning(
                    "marking %d delivered page(s) failed; retrying", len(jobs), exc_info=True
                )
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _settle_marks(self, jobs: list[Job], marks: asyncio.Future[list[Any]]) -> None:
        """The delivered marks queued with the outcome's row: on any failure, marked again
        until Redis takes them (`mark_delivered`)."""
        try:
            await self.idempotency.settle_delivered(jobs, marks)
        except Exception:
            log.warning("marking %d delivered page(s) failed; retrying", len(jobs), exc_info=True)
            await self.mark_delivered(jobs)

    async def _contact(self, jobs: list[Job], *, fresh: bool) -> oncall_service_pb2.ContactMethod:
        """The pages' contact method, from escalation. While escalation cannot answer
        (restarting, unreachable) the pages wait, their lease renewed, for up to
        ``contact_wait_s``: that outage is ours, not the channel's, and must not use up
        their attempts (the failure suite saw pages given up while escalation restarted)."""
        request = jobs[0].request
        waited, backoff = 0.0, 0.2
        while True:
            try:
                return await self.contacts.get(
                    request.user_id, request.contact_method_id, fresh=fresh
                )
            except ContactsUnavailable as outage:
                if waited >= self._contact_wait_s:
                    raise
                log.warning(
                    "waiting for escalation to look up %s/%s: %s",
                    request.user_id,
                    request.contact_method_id,
                    outage,
                )
            await self._clock.sleep(backoff)
            waited += backoff
            backoff = min(backoff * 2, 5.0)
            await self._keep_leases(jobs)

    async def _keep_leases(self, jobs: list[Job]) -> None:
        """Renew the pages' leases before an attempt; a page whose lease another worker
        took (it waited here past its lease, and the other worker claimed it after a
        rebalance) leaves the batch with LeaseLost, so its record is retried and finds that
        worker's outcome. `jobs` is changed in place: the message goes out without it."""
        lost = await self.idempotency.renew(jobs)
        if not lost:
            return
        error = LeaseLost(f"{len(lost)} page(s) claimed by another worker")
        for job in lost:
            jobs.remove(job)
            if job.done is not None and not job.done.done():
                job.done.set_exception(error)
        if not jobs:
            raise error

    async def _deliver_batch(self, jobs: list[Job]) -> None:
        first = jobs[0].request
        state: dict[str, str] = {"channel": "", "who": first.user_id}

        async def attempt(number: int) -> str:
            await self._keep_leases(jobs)
            # A retried attempt asks escalation again: the address may have been fixed.
            contact = await self._contact(jobs, fresh=number > 1)
            state["channel"] = contact.type
            state["who"] = contact.user_name or first.user_id
            provider = self.providers.get(contact.type)
            if provider is None:
                raise DeliveryError(f"no provider for channel {contact.type!r}", retryable=False)
            page = self.render.page(jobs, contact)
            return await self.send.send(provider, page)

        async def on_retry(failed: Attempt, wait: float) -> None:
            await each(
                jobs,
                lambda job: self.record.record(
                    job,
                    state["channel"],
                    Outcome.DELIVERY_OUTCOME_RETRYING,
                    f"{failed.error}; next attempt in {wait:.1f}s",
                    failed.attempt,
                    state["who"],
                ),
            )

        result = await self.retry.run(attempt, on_retry)
        bundled = f" (one message for {len(jobs)} incidents)" if len(jobs) > 1 else ""
        if first.HasField("reminder"):
            bundled += f" (reminder: {first.reminder.kind})"
        receipt = result.receipt
        if receipt is not None:
            # The delivered mark and the outcome's row go out in one Redis round trip. The
            # mark must be in before this ends, even with an error: a retried record must
            # find it (DUPLICATE), not this process's lease, which it would take back and
            # send the page again.
            marks = self.idempotency.delivered_soon(jobs)
            try:
                delivered = await each(
                    jobs,
                    lambda job: self.record.record(
                        job,
                        state["channel"],
                        Outcome.DELIVERY_OUTCOME_DELIVERED,
                        receipt + bundled,
                        result.attempts,
                        state["who"],
                    ),
                )
            finally:
                await self._settle_marks(jobs, marks)
            for job, status in zip(jobs, delivered, strict=True):
                if job.done is not None and not job.done.done():
                    job.done.set_result(status)
            return
        await self.idempotency.release(jobs)
        last = result.history[-1]
        reason = (
            f"gave up after {len(result.history)} attempts: {last.error}"
            if last.retryable
            else f"not retryable: {last.error}"
        )

        async def fail(job: Job) -> notification_pb2.NotificationStatus:
            await self.record.dead_letter(job, reason, result.history)
            return await self.record.record(
                job,
                state["channel"],
                Outcome.DELIVERY_OUTCOME_FAILED,
                reason,
                len(result.history),
                state["who"],
            )

        failed = await each(jobs, fail)
        for job, status in zip(jobs, failed, strict=True):
            if job.done is not None and not job.done.done():
                job.done.set_result(status)
