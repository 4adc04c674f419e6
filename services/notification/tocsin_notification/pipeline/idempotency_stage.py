"""Stage 1 — idempotency: a request whose key was delivered before (a redelivery, a
replay, a duplicate) is recorded as DUPLICATE and pages nobody."""

from __future__ import annotations

from tocsin_notification.idempotency import Claim, IdempotencyStore
from tocsin_notification.pipeline.job import Job, each


class IdempotencyStage:
    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def admit(self, job: Job) -> Claim:
        return await self.store.claim(job.request.idempotency_key)

    async def renew(self, jobs: list[Job]) -> list[Job]:
        """Renew the jobs' leases; the jobs whose lease another worker holds now (or whose
        page it delivered), which this process must not send."""
        ours = await each(jobs, lambda job: self.store.renew(job.request.idempotency_key))
        return [job for job, still in zip(jobs, ours, strict=True) if not still]

    async def delivered(self, jobs: list[Job]) -> None:
        await each(jobs, lambda job: self.store.delivered(job.request.idempotency_key))

    async def release(self, jobs: list[Job]) -> None:
        await each(jobs, lambda job: self.store.release(job.request.idempotency_key))

    def forget(self, job: Job) -> None:
        """The job ended in an error, without an outcome: see IdempotencyStore.forget."""
        self.store.forget(job.request.idempotency_key)
