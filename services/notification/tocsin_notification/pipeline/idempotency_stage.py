"""Stage 1 — idempotency: a request whose key was delivered before (a redelivery, a
replay, a duplicate) is recorded as DUPLICATE and pages nobody."""

from __future__ import annotations

import asyncio
from typing import Any

from tocsin_notification.idempotency import Claim, IdempotencyStore
from tocsin_notification.pipeline.job import Job, each
from tocsin_notification.redis_batch import Commands


class IdempotencyStage:
    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def admit(self, job: Job) -> Claim:
        return await self.store.claim(job.request.idempotency_key)

    async def admit_with(self, job: Job, also: Commands | None) -> tuple[Claim, list[Any]]:
        """`admit`, with `also`'s commands in the same round trip (their raw results)."""
        return await self.store.claim_with(job.request.idempotency_key, also)

    async def renew(self, jobs: list[Job]) -> list[Job]:
        """Renew the jobs' leases; the jobs whose lease another worker holds now (or whose
        page it delivered), which this process must not send."""
        ours = await each(jobs, lambda job: self.store.renew(job.request.idempotency_key))
        return [job for job, still in zip(jobs, ours, strict=True) if not still]

    async def delivered(self, jobs: list[Job]) -> None:
        await self.settle_delivered(jobs, self.delivered_soon(jobs))

    def delivered_soon(self, jobs: list[Job]) -> asyncio.Future[list[Any]]:
        """The jobs' delivered marks, queued now; `settle_delivered` awaits them."""
        return self.store.delivered_soon([job.request.idempotency_key for job in jobs])

    async def settle_delivered(self, jobs: list[Job], marks: asyncio.Future[list[Any]]) -> None:
        self.store.settled(await marks, [job.request.idempotency_key for job in jobs])

    async def release(self, jobs: list[Job]) -> None:
        await each(jobs, lambda job: self.store.release(job.request.idempotency_key))

    def forget(self, job: Job) -> None:
        """The job ended in an error, without an outcome: see IdempotencyStore.forget."""
        self.store.forget(job.request.idempotency_key)
