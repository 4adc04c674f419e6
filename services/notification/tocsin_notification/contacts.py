"""Contact methods, looked up from escalation over gRPC and kept for a few seconds.

Escalation owns the directory (the config's users and their contact methods). Asking it
once per page costs a round trip and CPU on both sides; a burst of pages for the same
people asks once per person and TTL, and concurrent look-ups of one contact method share
one call. A changed address applies to pages sent after the TTL (default 5 s), a retried
attempt looks the contact up afresh, and a failed look-up is never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from tocsin.v1 import oncall_service_pb2, oncall_service_pb2_grpc
from tocsin_common.tracing import record_error, tracer

from tocsin_notification.providers.base import DeliveryError

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values that expire `ttl_s` after they were put; at most `max_entries`, the oldest
    put first out (pure: the caller passes the time)."""

    def __init__(self, ttl_s: float, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        if self.ttl_s <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (now + self.ttl_s, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


Lookup = Callable[[str, str], Awaitable[oncall_service_pb2.ContactMethod]]


class ContactDirectory:
    def __init__(
        self,
        lookup: Lookup,
        ttl_s: float,
        monotonic: Callable[[], float] | None = None,
        max_concurrent: int = 256,
    ) -> None:
        self._lookup = lookup
        # Look-ups beyond this wait here, before their deadline starts: a burst must not
        # queue a thousand calls at escalation and let them run out of time there.
        self._calls = asyncio.Semaphore(max_concurrent)
        self._cache: TtlCache[tuple[str, str], oncall_service_pb2.ContactMethod] = TtlCache(ttl_s)
        self._monotonic = monotonic or time.monotonic
        self._pending: dict[tuple[str, str], asyncio.Future[oncall_service_pb2.ContactMethod]]
        self._pending = {}
        self.calls = 0  # look-ups sent to escalation

    async def get(
        self, user_id: str, contact_method_id: str, *, fresh: bool = False
    ) -> oncall_service_pb2.ContactMethod:
        """The contact method; `fresh` skips the cache (a retried attempt)."""
        key = (user_id, contact_method_id)
        if fresh:
            self._cache.drop(key)
        else:
            cached = self._cache.get(key, self._monotonic())
            if cached is not None:
                return cached
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[oncall_service_pb2.ContactMethod]
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            async with self._calls:
                self.calls += 1
                contact = await self._lookup(user_id, contact_method_id)
        except BaseException as e:
            if isinstance(e, Exception):
                future.set_exception(e)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            else:
                future.cancel()
            raise
        finally:
            del self._pending[key]
        self._cache.put(key, contact, self._monotonic())
        future.set_result(contact)
        return contact


_METHOD = "/tocsin.v1.OnCallService/GetContactMethod"


def grpc_lookup(stub: oncall_service_pb2_grpc.OnCallServiceStub, timeout_s: float = 5) -> Lookup:
    """A look-up over escalation's OnCallService; failures as DeliveryError (NOT_FOUND and
    INVALID_ARGUMENT are final, anything else is worth retrying).

    Meant for a channel without interceptors: the CLIENT span and the trace context in the
    call's metadata are made here, as the tracing interceptor would make them, without the
    interceptor's extra task on every page."""
    client_tracer = tracer("tocsin.grpc.client")

    async def lookup(user_id: str, contact_method_id: str) -> oncall_service_pb2.ContactMethod:
        with client_tracer.start_as_current_span(
            _METHOD.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": _METHOD},
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            try:
                contact: oncall_service_pb2.ContactMethod = await stub.GetContactMethod(
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id=user_id, contact_method_id=contact_method_id
                    ),
                    timeout=timeout_s,
                    metadata=tuple(carrier.items()),
                )
            except grpc.aio.AioRpcError as e:
                record_error(span, e)
                if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    raise DeliveryError(
                        f"contact method {user_id}/{contact_method_id}: {e.details()}",
                        retryable=False,
                    ) from None
                raise DeliveryError(
                    f"contact look-up failed: {e.code().name} {e.details()}", retryable=True
                ) from None
            return contact

    return lookup
