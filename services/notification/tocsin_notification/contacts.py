"""Contact methods, looked up from escalation over gRPC and kept for a few seconds.

Escalation owns the directory (the config's users and their contact methods). Asking it
once per page costs a round trip and CPU on both sides; a burst of pages for the same
people asks once per person and TTL, and concurrent look-ups of one contact method share
one call. A burst for many different people asks in batches: every look-up the pages
start during one turn of the event loop goes out as one `GetContactMethods` call (a lone
look-up as one `GetContactMethod`). A changed address applies to pages sent after the TTL
(default 5 s), a retried attempt looks the contact up afresh, and a failed look-up is
never kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind
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


Ref = tuple[str, str]  # (user_id, contact_method_id)
Lookup = Callable[[str, str], Awaitable[oncall_service_pb2.ContactMethod]]
# Many look-ups in one call: one result per ref, in order, each the contact method or the
# DeliveryError of that look-up alone; raises (DeliveryError) when the call as a whole
# failed. The span contexts are those of the pages that asked (for span links).
LookupResult = oncall_service_pb2.ContactMethod | DeliveryError
LookupMany = Callable[[Sequence[Ref], Sequence[SpanContext]], Awaitable[list[LookupResult]]]

log = logging.getLogger("tocsin.notification.contacts")


def _span_context() -> SpanContext:
    return trace.get_current_span().get_span_context()


class ContactDirectory:
    """Contact methods by (user, contact method), cached for `ttl_s`.

    With `lookup_many`, the look-ups that miss during one turn of the event loop go out
    together, at most `max_batch` to a call (a lone one through `lookup`); without it,
    each through `lookup`. At most `max_concurrent` calls are in flight; the others wait
    before their deadline starts."""

    def __init__(
        self,
        lookup: Lookup,
        ttl_s: float,
        monotonic: Callable[[], float] | None = None,
        max_concurrent: int = 256,
        lookup_many: LookupMany | None = None,
        max_batch: int = 500,
    ) -> None:
        self._lookup = lookup
        self._lookup_many = lookup_many
        self._max_batch = max(1, max_batch)
        # Calls beyond this wait here, before their deadline starts: a burst must not
        # queue a thousand calls at escalation and let them run out of time there.
        self._calls = asyncio.Semaphore(max_concurrent)
        self._cache: TtlCache[Ref, oncall_service_pb2.ContactMethod] = TtlCache(ttl_s)
        self._monotonic = monotonic or time.monotonic
        self._pending: dict[Ref, asyncio.Future[oncall_service_pb2.ContactMethod]] = {}
        # For the next batch: each look-up with the context of the page that asked.
        self._queue: list[tuple[Ref, contextvars.Context]] = []
        self._scheduled = False
        self._batches: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls sent to escalation
        self.looked_up = 0  # contact methods asked for in them

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[oncall_service_pb2.ContactMethod] = loop.create_future()
        self._pending[key] = future
        if self._lookup_many is None:
            await self._resolve([key], ())
            return future.result()
        self._queue.append((key, contextvars.copy_context()))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, context=contextvars.Context())
        return await asyncio.shield(future)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self._max_batch):
            batch = queue[start : start + self._max_batch]
            keys = [key for key, _ in batch]
            links: tuple[SpanContext, ...] = ()
            if len(batch) == 1:
                # A lone look-up runs in the context of the page that asked: its span is
                # a child of the page's, as without batches.
                context = batch[0][1]
            else:
                # A batch is no one page's child: its span starts a trace of its own and
                # links to the pages'.
                context = contextvars.Context()
                links = tuple(page.run(_span_context) for _, page in batch)
            task = asyncio.get_running_loop().create_task(
                self._resolve(keys, links), context=context
            )
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _resolve(self, keys: list[Ref], links: Sequence[SpanContext]) -> None:
        """Look `keys` up (one call) and settle their pending futures. Raises only for
        the lone look-up without `lookup_many`, whose caller awaits this directly."""
        results: list[LookupResult]
        try:
            async with self._calls:
                self.calls += 1
                self.looked_up += len(keys)
                if len(keys) == 1 or self._lookup_many is None:
                    results = [await self._lookup(*keys[0])]
                else:
                    results = await self._lookup_many(keys, links)
        except BaseException as e:
            for key in keys:
                self._settle(key, e)
            if self._lookup_many is None or not isinstance(e, Exception):
                raise
            return
        if len(results) != len(keys):
            error = DeliveryError(
                f"contact look-up failed: {len(results)} results for {len(keys)} look-ups",
                retryable=True,
            )
            results = [error] * len(keys)
        now = self._monotonic()
        for key, result in zip(keys, results, strict=True):
            if not isinstance(result, BaseException):
                self._cache.put(key, result, now)
            self._settle(key, result)

    def _settle(self, key: Ref, result: oncall_service_pb2.ContactMethod | BaseException) -> None:
        future = self._pending.pop(key)
        if future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
        elif isinstance(result, BaseException):
            future.cancel()
        else:
            future.set_result(result)


_METHOD = "/tocsin.v1.OnCallService/GetContactMethod"
_BATCH_METHOD = "/tocsin.v1.OnCallService/GetContactMethods"
_FINAL = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
# Escalation could not answer at all (restarting, unreachable, overloaded).
_OUTAGE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ContactsUnavailable(DeliveryError):
    """Escalation could not answer the look-up (it is restarting or unreachable): an
    outage of ours, not of the person's channel. The pipeline waits for escalation rather
    than spend the page's attempts on it (see Pipeline.contact_wait_s)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def _lookup_error(
    user_id: str, contact_method_id: str, code: grpc.StatusCode, details: str
) -> DeliveryError:
    """NOT_FOUND and INVALID_ARGUMENT are final, anything else is worth retrying."""
    if code in _FINAL:
        return DeliveryError(
            f"contact method {user_id}/{contact_method_id}: {details}", retryable=False
        )
    if code in _OUTAGE:
        return ContactsUnavailable(f"contact look-up failed: {code.name} {details}")
    return DeliveryError(f"contact look-up failed: {code.name} {details}", retryable=True)


class GrpcContacts:
    """Look-ups over escalation's OnCallService, failures as DeliveryError.

    Meant for a channel without interceptors: the CLIENT span and the trace context in the
    call's metadata are made here, as the tracing interceptor would make them, without the
    interceptor's extra task on every call. An escalation that does not know
    GetContactMethods yet (an older version, during a rolling upgrade) is asked one
    look-up at a time, and asked for batches again `retry_batch_after_s` later."""

    def __init__(
        self,
        stub: oncall_service_pb2_grpc.OnCallServiceStub,
        timeout_s: float = 5,
        *,
        retry_batch_after_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        credential: str | None = None,
    ) -> None:
        self._stub = stub
        # notification's service credential: escalation shows contact data to it alone.
        self._auth = {"authorization": f"Bearer {credential}"} if credential else {}
        self._timeout = timeout_s
        self._retry_batch_after = retry_batch_after_s
        self._monotonic = monotonic
        self._batch_unsupported_until = float("-inf")
        self._tracer = tracer("tocsin.grpc.client")

    async def one(self, user_id: str, contact_method_id: str) -> oncall_service_pb2.ContactMethod:
        with self._tracer.start_as_current_span(
            _METHOD.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": _METHOD},
        ) as span:
            carrier: dict[str, str] = dict(self._auth)
            propagate.inject(carrier)
            try:
                contact: oncall_service_pb2.ContactMethod = await self._stub.GetContactMethod(
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id=user_id, contact_method_id=contact_method_id
                    ),
                    timeout=self._timeout,
                    metadata=tuple(carrier.items()),
                )
            except grpc.aio.AioRpcError as e:
                record_error(span, e)
                raise _lookup_error(user_id, contact_method_id, e.code(), e.details()) from None
            return contact

    async def many(self, refs: Sequence[Ref], links: Sequence[SpanContext]) -> list[LookupResult]:
        if self._monotonic() < self._batch_unsupported_until:
            return await self._one_by_one(refs)
        with self._tracer.start_as_current_span(
            _BATCH_METHOD.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": _BATCH_METHOD,
                "tocsin.contact_lookups": len(refs),
            },
            links=[Link(ctx) for ctx in links if ctx.is_valid],
        ) as span:
            carrier: dict[str, str] = dict(self._auth)
            propagate.inject(carrier)
            request = oncall_service_pb2.GetContactMethodsRequest(
                lookups=[
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id=user_id, contact_method_id=contact_method_id
                    )
                    for user_id, contact_method_id in refs
                ]
            )
            try:
                response: oncall_service_pb2.GetContactMethodsResponse = (
                    await self._stub.GetContactMethods(
                        request, timeout=self._timeout, metadata=tuple(carrier.items())
                    )
                )
            except grpc.aio.AioRpcError as e:
                record_error(span, e)
                if e.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    if e.code() in _OUTAGE:
                        raise ContactsUnavailable(
                            f"contact look-up failed: {e.code().name} {e.details()}"
                        ) from None
                    raise DeliveryError(
                        f"contact look-up failed: {e.code().name} {e.details()}", retryable=True
                    ) from None
            else:
                if len(response.results) != len(refs):
                    error = DeliveryError(
                        f"contact look-up failed: {len(response.results)} results for "
                        f"{len(refs)} look-ups",
                        retryable=True,
                    )
                    record_error(span, error)
                    raise error
                return [_result(ref, r) for ref, r in zip(refs, response.results, strict=True)]
        log.warning(
            "escalation does not serve GetContactMethods: looking contacts up one at a time "
            "for %gs",
            self._retry_batch_after,
        )
        self._batch_unsupported_until = self._monotonic() + self._retry_batch_after
        return await self._one_by_one(refs)

    async def _one_by_one(self, refs: Sequence[Ref]) -> list[LookupResult]:
        async def one(ref: Ref) -> LookupResult:
            try:
                return await self.one(*ref)
            except DeliveryError as e:
                return e

        return list(await asyncio.gather(*(one(ref) for ref in refs)))


def _result(ref: Ref, result: oncall_service_pb2.ContactMethodResult) -> LookupResult:
    kind = result.WhichOneof("result")
    if kind == "contact_method":
        return result.contact_method
    if kind == "error":
        code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
        return _lookup_error(ref[0], ref[1], code, result.error.message)
    return DeliveryError("contact look-up failed: an empty result", retryable=True)


def grpc_lookup(stub: oncall_service_pb2_grpc.OnCallServiceStub, timeout_s: float = 5) -> Lookup:
    """A single look-up over escalation's OnCallService (see GrpcContacts.one)."""
    return GrpcContacts(stub, timeout_s).one
