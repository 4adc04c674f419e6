"""A job: one NotificationRequest on its way through the pipeline, with where it came from
(for the dead letter) and the history of its attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tocsin.v1 import notification_pb2


@dataclass
class Source:
    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: bytes = b""
    value: bytes = b""
    headers: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Attempt:
    attempt: int
    at: str
    error: str
    retryable: bool
    duration_ms: int
    endpoint: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "at": self.at,
            "error": self.error,
            "retryable": self.retryable,
            "duration_ms": self.duration_ms,
            "endpoint": self.endpoint,
        }


@dataclass
class Job:
    request: notification_pb2.NotificationRequest
    source: Source = field(default_factory=Source)
    done: asyncio.Future[notification_pb2.NotificationStatus] | None = None
    # This job took the idempotency key's lease: only then may it give the key up when it
    # fails (another job of this process, a redelivery of the same request, may hold it).
    claimed: bool = False
    # Acknowledgements of the records this job's outcomes were handed to Kafka as. The
    # pipeline does not wait for them; whoever commits the request (the consumer) does.
    produced: list[asyncio.Future[Any]] = field(default_factory=list)

    @property
    def bundle_key(self) -> str:
        # Reminders go apart from pages (a message is one or the other), bundled and rate
        # limited among themselves.
        tail = "/reminder" if self.request.HasField("reminder") else ""
        return f"{self.request.user_id}/{self.request.contact_method_id}{tail}"


T = TypeVar("T")


async def each(jobs: list[Job], action: Callable[[Job], Awaitable[T]]) -> list[T]:
    """`action` for every job, concurrently; for a lone job (the common case) directly,
    without the task per job that gather makes."""
    if len(jobs) == 1:
        return [await action(jobs[0])]
    return list(await asyncio.gather(*(action(job) for job in jobs)))
