"""Contact look-ups in batches, without I/O: the look-ups a burst's pages start in one turn
of the event loop go to escalation as one GetContactMethods call, each page gets its own
contact or its own error, and the gRPC adapter maps the batch answer (and an escalation
that does not serve batches yet) the way the single look-up does."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.trace import SpanContext
from tocsin.v1 import oncall_service_pb2
from tocsin_common.config import parse_config
from tocsin_escalation.grpc_api import MAX_CONTACT_LOOKUPS, LookupFailure, contact_method
from tocsin_notification.contacts import ContactDirectory, GrpcContacts, LookupResult, Ref
from tocsin_notification.providers.base import DeliveryError
from tocsin_notification.tuning import Tuning


def contact(user_id: str, contact_method_id: str = "hook") -> oncall_service_pb2.ContactMethod:
    return oncall_service_pb2.ContactMethod(
        user_id=user_id,
        contact_method_id=contact_method_id,
        type="webhook",
        address=f"https://hooks.example/{user_id}",
    )


PAGE: contextvars.ContextVar[str] = contextvars.ContextVar("page", default="")


class Escalation:
    """Answers single and batched look-ups like escalation does, recording each call."""

    def __init__(self) -> None:
        self.seen_by_single: list[str] = []  # PAGE as each call saw it
        self.seen_by_many: list[str] = []
        self.single: list[Ref] = []
        self.batches: list[list[Ref]] = []
        self.missing: set[str] = set()  # users without the contact method
        self.fail: DeliveryError | None = None  # the whole call fails
        self.gate: asyncio.Event | None = None

    async def one(self, user_id: str, contact_method_id: str) -> oncall_service_pb2.ContactMethod:
        self.single.append((user_id, contact_method_id))
        self.seen_by_single.append(PAGE.get())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if user_id in self.missing:
            raise DeliveryError(
                f"contact method {user_id}/{contact_method_id}: none", retryable=False
            )
        return contact(user_id, contact_method_id)

    async def many(self, refs: Sequence[Ref], links: Sequence[SpanContext]) -> list[LookupResult]:
        self.batches.append(list(refs))
        self.seen_by_many.append(PAGE.get())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [
            DeliveryError(f"contact method {u}/{c}: none", retryable=False)
            if u in self.missing
            else contact(u, c)
            for u, c in refs
        ]


def directory(escalation: Escalation, **kwargs: Any) -> ContactDirectory:
    return ContactDirectory(
        escalation.one, ttl_s=5, monotonic=lambda: 0.0, lookup_many=escalation.many, **kwargs
    )


async def test_look_ups_started_in_one_turn_go_out_as_one_call() -> None:
    escalation = Escalation()
    contacts = directory(escalation)
    found = await asyncio.gather(*(contacts.get(f"user-{n}", "hook") for n in range(50)))
    assert [c.user_id for c in found] == [f"user-{n}" for n in range(50)]
    assert len(escalation.batches) == 1 and len(escalation.batches[0]) == 50
    assert escalation.single == []
    assert (contacts.calls, contacts.looked_up) == (1, 50)
    # Kept: asking again within the TTL asks nobody.
    await asyncio.gather(*(contacts.get(f"user-{n}", "hook") for n in range(50)))
    assert contacts.calls == 1


async def test_a_lone_look_up_uses_the_single_call() -> None:
    escalation = Escalation()
    contacts = directory(escalation)
    assert (await contacts.get("nina", "hook")).user_id == "nina"
    assert escalation.single == [("nina", "hook")] and escalation.batches == []


async def test_a_lone_look_up_runs_in_the_pages_context_and_a_batch_in_none() -> None:
    # (So a lone page's trace shows its look-up as a child, and a batch's span is no one
    # page's child.)
    escalation = Escalation()
    contacts = directory(escalation)

    async def page(user: str) -> oncall_service_pb2.ContactMethod:
        PAGE.set(f"page of {user}")
        return await contacts.get(user, "hook")

    await asyncio.create_task(page("nina"))
    await asyncio.gather(*(asyncio.create_task(page(u)) for u in ("omar", "pia")))
    assert escalation.seen_by_single == ["page of nina"]
    assert escalation.seen_by_many == [""]


async def test_a_batch_is_at_most_max_batch_look_ups() -> None:
    escalation = Escalation()
    contacts = directory(escalation, max_batch=20)
    await asyncio.gather(*(contacts.get(f"user-{n}", "hook") for n in range(41)))
    assert [len(b) for b in escalation.batches] == [20, 20]
    assert escalation.single == [("user-40", "hook")]  # the one left over: a single call


async def test_the_same_contact_asked_twice_in_a_turn_is_looked_up_once() -> None:
    escalation = Escalation()
    contacts = directory(escalation)
    found = await asyncio.gather(
        *(contacts.get(user, "hook") for user in ["a", "b", "a", "c", "b", "a"])
    )
    assert [c.user_id for c in found] == ["a", "b", "a", "c", "b", "a"]
    assert escalation.batches == [[("a", "hook"), ("b", "hook"), ("c", "hook")]]


async def test_a_failed_look_up_in_a_batch_fails_only_its_own_pages_and_is_not_kept() -> None:
    escalation = Escalation()
    escalation.missing = {"ghost"}
    contacts = directory(escalation)
    results = await asyncio.gather(
        contacts.get("nina", "hook"),
        contacts.get("ghost", "hook"),
        contacts.get("ghost", "hook"),
        contacts.get("omar", "hook"),
        return_exceptions=True,
    )
    assert [getattr(r, "user_id", None) for r in results] == ["nina", None, None, "omar"]
    assert all(isinstance(r, DeliveryError) and not r.retryable for r in results[1:3])
    escalation.missing = set()
    assert (await contacts.get("ghost", "hook")).user_id == "ghost"  # asked again
    assert (await contacts.get("nina", "hook")).user_id == "nina"  # kept
    assert escalation.single == [("ghost", "hook")]


async def test_a_failed_batch_call_reaches_every_page_and_nothing_is_kept() -> None:
    escalation = Escalation()
    escalation.fail = DeliveryError("contact look-up failed: UNAVAILABLE", retryable=True)
    contacts = directory(escalation)
    results = await asyncio.gather(
        *(contacts.get(f"user-{n}", "hook") for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, DeliveryError) and r.retryable for r in results)
    escalation.fail = None
    found = await asyncio.gather(*(contacts.get(f"user-{n}", "hook") for n in range(5)))
    assert [c.user_id for c in found] == [f"user-{n}" for n in range(5)]
    assert len(escalation.batches) == 2


async def test_a_batch_answer_of_the_wrong_length_fails_its_look_ups_as_retryable() -> None:
    escalation = Escalation()

    async def short(refs: Sequence[Ref], links: Sequence[SpanContext]) -> list[LookupResult]:
        found: list[LookupResult] = [contact(u, c) for u, c in refs]
        return found[:-1]

    contacts = ContactDirectory(escalation.one, ttl_s=5, lookup_many=short)
    results = await asyncio.gather(
        *(contacts.get(f"user-{n}", "hook") for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, DeliveryError) and r.retryable for r in results)


async def test_batch_calls_beyond_the_limit_wait_their_turn() -> None:
    escalation = Escalation()
    escalation.gate = asyncio.Event()
    contacts = directory(escalation, max_batch=2, max_concurrent=2)
    waiting = [asyncio.create_task(contacts.get(f"user-{n}", "hook")) for n in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(escalation.batches) == 2
    escalation.gate.set()
    found = await asyncio.gather(*waiting)
    assert [c.user_id for c in found] == [f"user-{n}" for n in range(10)]
    assert len(escalation.batches) == 5


async def test_a_page_cancelled_while_its_batch_runs_does_not_fail_the_others() -> None:
    escalation = Escalation()
    escalation.gate = asyncio.Event()
    contacts = directory(escalation)
    waiting = [asyncio.create_task(contacts.get(f"user-{n}", "hook")) for n in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting[0].cancel()
    escalation.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert [r.user_id for r in results[1:]] == ["user-1", "user-2"]  # type: ignore[union-attr]
    assert (await contacts.get("user-0", "hook")).user_id == "user-0"  # its answer was kept
    assert len(escalation.batches) == 1


def test_contact_batch_tunable() -> None:
    assert Tuning().contact_batch == 500
    assert Tuning.from_env({"TOCSIN_NOTIFY_CONTACT_BATCH": "1"}).contact_batch == 1
    assert Tuning.from_env({"TOCSIN_NOTIFY_CONTACT_BATCH": "5000"}).contact_batch == 1000


# --- the gRPC adapter --------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class Stub:
    """OnCallServiceStub's two look-ups, answered from `known` users."""

    def __init__(self, known: set[str], batches: bool = True) -> None:
        self.known = known
        self.batches = batches
        self.calls: list[str] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.extra = False  # answer one result too many

    async def GetContactMethod(
        self, request: oncall_service_pb2.GetContactMethodRequest, **kwargs: Any
    ) -> oncall_service_pb2.ContactMethod:
        self.calls.append("GetContactMethod")
        if request.user_id not in self.known:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"user_id: no user {request.user_id!r}")
        return contact(request.user_id, request.contact_method_id)

    async def GetContactMethods(
        self, request: oncall_service_pb2.GetContactMethodsRequest, **kwargs: Any
    ) -> oncall_service_pb2.GetContactMethodsResponse:
        self.calls.append("GetContactMethods")
        assert dict(kwargs["metadata"]) is not None and kwargs["timeout"] == 5
        if not self.batches:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self.error is not None:
            raise self.error
        response = oncall_service_pb2.GetContactMethodsResponse()
        for lookup in request.lookups:
            if lookup.user_id == "empty":
                response.results.add()  # neither a contact nor an error: retryable
            elif lookup.user_id in self.known:
                response.results.add(
                    contact_method=contact(lookup.user_id, lookup.contact_method_id)
                )
            else:
                response.results.add(
                    error=oncall_service_pb2.ContactLookupError(
                        code=grpc.StatusCode.NOT_FOUND.value[0],
                        message=f"user_id: no user {lookup.user_id!r}",
                    )
                )
        if self.extra:
            response.results.add()
        return response


async def test_a_batch_answer_maps_to_contacts_and_final_errors() -> None:
    stub = Stub({"nina"})
    first, second, third = await GrpcContacts(stub).many(  # type: ignore[arg-type]
        [("nina", "hook"), ("ghost", "hook"), ("empty", "hook")], []
    )
    assert isinstance(first, oncall_service_pb2.ContactMethod) and first.user_id == "nina"
    assert isinstance(second, DeliveryError) and not second.retryable
    assert str(second) == "contact method ghost/hook: user_id: no user 'ghost'"
    assert isinstance(third, DeliveryError) and third.retryable
    assert stub.calls == ["GetContactMethods"]


async def test_a_batch_answer_of_another_length_is_a_retryable_failure() -> None:
    stub = Stub({"nina"})
    stub.extra = True
    with pytest.raises(DeliveryError, match="2 results for 1 look-ups") as raised:
        await GrpcContacts(stub).many([("nina", "hook")], [])  # type: ignore[arg-type]
    assert raised.value.retryable


async def test_a_failed_batch_call_is_retryable() -> None:
    stub = Stub({"nina"})
    stub.error = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
    with pytest.raises(DeliveryError, match="UNAVAILABLE") as raised:
        await GrpcContacts(stub).many([("nina", "hook")], [])  # type: ignore[arg-type]
    assert raised.value.retryable


async def test_an_escalation_without_batches_is_asked_one_by_one_until_retried() -> None:
    now = [0.0]
    stub = Stub({"nina", "omar"}, batches=False)
    contacts = GrpcContacts(
        stub,  # type: ignore[arg-type]
        retry_batch_after_s=60,
        monotonic=lambda: now[0],
    )
    results = await contacts.many([("nina", "hook"), ("omar", "hook"), ("ghost", "hook")], [])
    assert [getattr(r, "user_id", None) for r in results] == ["nina", "omar", None]
    assert isinstance(results[2], DeliveryError) and not results[2].retryable
    assert stub.calls == ["GetContactMethods"] + ["GetContactMethod"] * 3
    stub.calls.clear()
    await contacts.many([("nina", "hook"), ("omar", "hook")], [])
    assert stub.calls == ["GetContactMethod"] * 2  # not asked for a batch again yet
    stub.calls.clear()
    now[0] = 60.0
    stub.batches = True
    await contacts.many([("nina", "hook"), ("omar", "hook")], [])
    assert stub.calls == ["GetContactMethods"]


# --- escalation's side -------------------------------------------------------------------

CONFIG = """
version: 1
users:
  - id: nina
    name: Nina
    email: nina@example.com
    time_zone: Europe/Berlin
    contact_methods:
      - {id: nina-hook, type: webhook, address: "https://hooks.example/nina"}
"""


def test_escalation_answers_a_look_up_with_the_contact_or_why_not() -> None:
    config = parse_config(CONFIG)
    found = contact_method(config, "nina", "nina-hook")
    assert isinstance(found, oncall_service_pb2.ContactMethod)
    assert (found.type, found.address, found.user_name, found.time_zone) == (
        "webhook",
        "https://hooks.example/nina",
        "Nina",
        "Europe/Berlin",
    )
    assert contact_method(config, "ghost", "x") == LookupFailure(
        grpc.StatusCode.NOT_FOUND, "user_id: no user 'ghost'"
    )
    assert contact_method(config, "nina", "pager") == LookupFailure(
        grpc.StatusCode.NOT_FOUND,
        "contact_method_id: user 'nina' has no contact method 'pager'",
    )
    assert contact_method(config, "", "x") == LookupFailure(
        grpc.StatusCode.INVALID_ARGUMENT, "user_id: is required"
    )
    assert contact_method(config, "nina", "") == LookupFailure(
        grpc.StatusCode.INVALID_ARGUMENT, "contact_method_id: is required"
    )
    biggest = Tuning.from_env({"TOCSIN_NOTIFY_CONTACT_BATCH": "9999"}).contact_batch
    assert biggest <= MAX_CONTACT_LOOKUPS  # notification never asks for more than it may
