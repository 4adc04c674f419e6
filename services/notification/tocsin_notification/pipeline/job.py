"""A job: one NotificationRequest on its way through the pipeline, with where it came from
(for the dead letter) and the history of its attempts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

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

    @property
    def bundle_key(self) -> str:
        return f"{self.request.user_id}/{self.request.contact_method_id}"
