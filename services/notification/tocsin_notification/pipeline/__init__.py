"""The delivery pipeline, a chain of small stages, one module each:

idempotency -> rate limit -> bundle -> render -> send -> retry -> record

`Pipeline.handle(job)` returns when the job's outcome is final and recorded (delivered,
duplicate, or failed and dead-lettered), so the consumer commits its offset only then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
from tocsin.v1 import notification_pb2, oncall_service_pb2, oncall_service_pb2_grpc
from tocsin_common.clock import Clock

from tocsin_notification.idempotency import Claim
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.idempotency_stage import IdempotencyStage
from tocsin_notification.pipeline.job import Attempt, Job, Source
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
        oncall: oncall_service_pb2_grpc.OnCallServiceStub,
        providers: Mapping[str, Provider],
        clock: Clock,
    ) -> None:
        self._clock = clock
        self.idempotency = idempotency
        self.ratelimit = ratelimit
        self.bundle = bundle
        self.render = render
        self.send = send
        self.retry = retry
        self.record = record
        self._oncall = oncall
        self.providers = providers

    async def handle(self, job: Job) -> notification_pb2.NotificationStatus:
        claim = await self.idempotency.admit(job)
        # In flight elsewhere: a worker holds the lease, or held it and died (SIGKILL)
        # before sending. Not a duplicate yet: wait until it delivers (then it is one) or
        # its lease runs out (then this page is ours to send), so no page is lost.
        while claim is Claim.IN_FLIGHT:
            await self._clock.sleep(1.0)
            claim = await self.idempotency.admit(job)
        if claim is not Claim.ACQUIRED:
            return await self.record.record(
                job, "", Outcome.DELIVERY_OUTCOME_DUPLICATE, claim.value
            )
        job.done = asyncio.get_running_loop().create_future()
        limited_until = self.ratelimit.limited_until(job.bundle_key, self._clock.now())
        held = await self.bundle.submit(job, self._deliver)
        if held and limited_until is not None:
            await self.record.record(
                job,
                "",
                Outcome.DELIVERY_OUTCOME_RATE_LIMITED,
                f"held until {limited_until.isoformat()} and bundled",
            )
        return await job.done

    async def _deliver(self, jobs: list[Job]) -> None:
        try:
            await self._deliver_batch(jobs)
        except BaseException as e:
            for job in jobs:
                if job.done is not None and not job.done.done():
                    job.done.set_exception(e)
            if not isinstance(e, Exception):
                raise

    async def _deliver_batch(self, jobs: list[Job]) -> None:
        first = jobs[0].request
        state: dict[str, str] = {"channel": "", "who": first.user_id}

        async def attempt(number: int) -> str:
            await self.idempotency.renew(jobs)
            contact = await self._contact(first.user_id, first.contact_method_id)
            state["channel"] = contact.type
            state["who"] = contact.user_name or first.user_id
            provider = self.providers.get(contact.type)
            if provider is None:
                raise DeliveryError(f"no provider for channel {contact.type!r}", retryable=False)
            page = self.render.page(jobs, contact)
            return await self.send.send(provider, page)

        async def on_retry(failed: Attempt, wait: float) -> None:
            for job in jobs:
                await self.record.record(
                    job,
                    state["channel"],
                    Outcome.DELIVERY_OUTCOME_RETRYING,
                    f"{failed.error}; next attempt in {wait:.1f}s",
                    failed.attempt,
                    state["who"],
                )

        result = await self.retry.run(attempt, on_retry)
        bundled = f" (one message for {len(jobs)} incidents)" if len(jobs) > 1 else ""
        if result.receipt is not None:
            await self.idempotency.delivered(jobs)
            for job in jobs:
                status = await self.record.record(
                    job,
                    state["channel"],
                    Outcome.DELIVERY_OUTCOME_DELIVERED,
                    result.receipt + bundled,
                    result.attempts,
                    state["who"],
                )
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
        for job in jobs:
            await self.record.dead_letter(job, reason, result.history)
            status = await self.record.record(
                job,
                state["channel"],
                Outcome.DELIVERY_OUTCOME_FAILED,
                reason,
                len(result.history),
                state["who"],
            )
            if job.done is not None and not job.done.done():
                job.done.set_result(status)

    async def _contact(
        self, user_id: str, contact_method_id: str
    ) -> oncall_service_pb2.ContactMethod:
        """Looked up at send time, so a changed address applies to the very next page."""
        try:
            contact: oncall_service_pb2.ContactMethod = await self._oncall.GetContactMethod(
                oncall_service_pb2.GetContactMethodRequest(
                    user_id=user_id, contact_method_id=contact_method_id
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise DeliveryError(
                    f"contact method {user_id}/{contact_method_id}: {e.details()}",
                    retryable=False,
                ) from None
            raise DeliveryError(
                f"contact look-up failed: {e.code().name} {e.details()}", retryable=True
            ) from None
        return contact
