"""The logic behind notification throughput, without I/O: what a SET NX GET answer means for
a page's claim, when a lease needs renewing, the contact-method cache and its shared
look-ups, and the tunable for it."""

from __future__ import annotations

import asyncio

import pytest
from tocsin.v1 import oncall_service_pb2
from tocsin_common.clock import FakeClock
from tocsin_notification.breaker import BreakerRegistry
from tocsin_notification.contacts import ContactDirectory, TtlCache
from tocsin_notification.idempotency import (
    DELIVERED,
    LEASE_TTL_S,
    Claim,
    classify,
    lease_due,
    lease_value,
)
from tocsin_notification.pipeline.send_stage import SendStage
from tocsin_notification.providers.base import DeliveryError, Page
from tocsin_notification.tuning import Tuning

OURS = lease_value("worker-a")
THEIRS = lease_value("worker-b")

# --- claims ------------------------------------------------------------------------------


def test_a_free_key_is_acquired() -> None:
    assert classify(None, OURS, held_here=False) is Claim.ACQUIRED


def test_a_delivered_key_is_a_duplicate_whoever_asks() -> None:
    assert classify(DELIVERED, OURS, held_here=False) is Claim.DELIVERED
    assert classify(DELIVERED, OURS, held_here=True) is Claim.DELIVERED


def test_another_workers_lease_means_in_flight() -> None:
    assert classify(THEIRS, OURS, held_here=False) is Claim.IN_FLIGHT
    assert classify(b"sending", OURS, held_here=False) is Claim.IN_FLIGHT  # older format


def test_our_own_lease_is_taken_back_only_when_no_page_here_works_on_it() -> None:
    # Left behind by an attempt that failed in this process: a retry need not wait it out.
    assert classify(OURS, OURS, held_here=False) is Claim.ACQUIRED
    # A page of this process still works on it (a duplicate request in the same burst).
    assert classify(OURS, OURS, held_here=True) is Claim.IN_FLIGHT


def test_lease_values_name_their_owner() -> None:
    assert lease_value("worker-a") != lease_value("worker-b")
    assert DELIVERED not in (lease_value("a"), lease_value("b"))


def test_a_lease_is_renewed_once_a_third_of_it_has_passed() -> None:
    assert lease_due(None, now=100.0)
    assert not lease_due(100.0, now=100.0)
    assert not lease_due(100.0, now=100.0 + LEASE_TTL_S / 3 - 0.1)
    assert lease_due(100.0, now=100.0 + LEASE_TTL_S / 3)


# --- contact cache -----------------------------------------------------------------------


def test_ttl_cache_expires_entries() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=5)
    cache.put("a", 1, now=10.0)
    assert cache.get("a", now=14.9) == 1
    assert cache.get("a", now=15.0) is None
    assert len(cache) == 0


def test_ttl_cache_is_bounded_and_drops_the_oldest_first() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60, max_entries=2)
    cache.put("a", 1, now=0)
    cache.put("b", 2, now=1)
    cache.put("c", 3, now=2)
    assert cache.get("a", now=3) is None
    assert (cache.get("b", now=3), cache.get("c", now=3)) == (2, 3)


def test_a_zero_ttl_keeps_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=0)
    cache.put("a", 1, now=0)
    assert cache.get("a", now=0) is None


class Escalation:
    """Answers contact look-ups like escalation does, counting them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.address = "https://hooks.example/a"
        self.gate: asyncio.Event | None = None
        self.fail: DeliveryError | None = None

    async def lookup(
        self, user_id: str, contact_method_id: str
    ) -> oncall_service_pb2.ContactMethod:
        self.calls.append((user_id, contact_method_id))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return oncall_service_pb2.ContactMethod(
            user_id=user_id,
            contact_method_id=contact_method_id,
            type="webhook",
            address=self.address,
        )


async def test_a_contact_is_looked_up_once_within_its_ttl_and_again_after() -> None:
    now = [0.0]
    escalation = Escalation()
    directory = ContactDirectory(escalation.lookup, ttl_s=5, monotonic=lambda: now[0])
    first = await directory.get("nina", "hook")
    escalation.address = "https://hooks.example/b"  # changed in the config
    now[0] = 4.9
    assert (await directory.get("nina", "hook")).address == first.address
    now[0] = 5.0
    assert (await directory.get("nina", "hook")).address == "https://hooks.example/b"
    assert escalation.calls == [("nina", "hook"), ("nina", "hook")]


async def test_fresh_skips_the_cache_for_a_retried_attempt() -> None:
    escalation = Escalation()
    directory = ContactDirectory(escalation.lookup, ttl_s=60, monotonic=lambda: 0.0)
    await directory.get("nina", "hook")
    escalation.address = "https://hooks.example/fixed"
    assert (await directory.get("nina", "hook", fresh=True)).address.endswith("/fixed")
    assert (await directory.get("nina", "hook")).address.endswith("/fixed")
    assert len(escalation.calls) == 2


async def test_concurrent_look_ups_of_one_contact_share_one_call() -> None:
    escalation = Escalation()
    escalation.gate = asyncio.Event()
    directory = ContactDirectory(escalation.lookup, ttl_s=5, monotonic=lambda: 0.0)
    waiting = [asyncio.create_task(directory.get("nina", "hook")) for _ in range(50)]
    other = asyncio.create_task(directory.get("omar", "hook"))
    await asyncio.sleep(0)
    escalation.gate.set()
    contacts = await asyncio.gather(*waiting, other)
    assert {c.user_id for c in contacts[:50]} == {"nina"} and contacts[50].user_id == "omar"
    assert sorted(escalation.calls) == [("nina", "hook"), ("omar", "hook")]


async def test_a_failed_look_up_reaches_every_waiter_and_is_not_kept() -> None:
    escalation = Escalation()
    escalation.gate = asyncio.Event()
    escalation.fail = DeliveryError("contact look-up failed: UNAVAILABLE", retryable=True)
    directory = ContactDirectory(escalation.lookup, ttl_s=5, monotonic=lambda: 0.0)
    waiting = [asyncio.create_task(directory.get("nina", "hook")) for _ in range(3)]
    await asyncio.sleep(0)
    escalation.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, DeliveryError) and r.retryable for r in results)
    escalation.fail = None
    assert (await directory.get("nina", "hook")).user_id == "nina"
    assert len(escalation.calls) == 2


async def test_look_ups_beyond_the_limit_wait_their_turn() -> None:
    escalation = Escalation()
    escalation.gate = asyncio.Event()
    directory = ContactDirectory(
        escalation.lookup, ttl_s=5, monotonic=lambda: 0.0, max_concurrent=3
    )
    waiting = [asyncio.create_task(directory.get(f"user-{n}", "hook")) for n in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(escalation.calls) == 3
    escalation.gate.set()
    contacts = await asyncio.gather(*waiting)
    assert [c.user_id for c in contacts] == [f"user-{n}" for n in range(10)]


def test_throughput_tunables() -> None:
    defaults = Tuning()
    assert (defaults.contact_ttl_s, defaults.max_per_endpoint, defaults.max_lookups) == (
        5.0,
        200,
        256,
    )
    env = {
        "TOCSIN_NOTIFY_CONTACT_TTL_S": "0",
        "TOCSIN_NOTIFY_MAX_PER_ENDPOINT": "8",
        "TOCSIN_NOTIFY_MAX_LOOKUPS": "16",
    }
    tuned = Tuning.from_env(env)
    assert (tuned.contact_ttl_s, tuned.max_per_endpoint, tuned.max_lookups) == (0.0, 8, 16)
    with pytest.raises(ValueError, match="TOCSIN_NOTIFY_CONTACT_TTL_S"):
        Tuning.from_env({"TOCSIN_NOTIFY_CONTACT_TTL_S": "soon"})


# --- attempts per endpoint ---------------------------------------------------------------


class GatedProvider:
    """Holds every attempt until its endpoint's gate opens; counts them in flight."""

    channel = "webhook"

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.in_flight: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def send(self, page: Page) -> str:
        host = page.address.split("/")[2]
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        self.most[host] = max(self.most.get(host, 0), self.in_flight[host])
        try:
            await self.gates.setdefault(host, asyncio.Event()).wait()
        finally:
            self.in_flight[host] -= 1
        return "HTTP 200"

    async def close(self) -> None:
        pass


def page_to(address: str) -> Page:
    return Page(
        incident_id="i",
        service_id="s",
        title="t",
        status="triggered",
        urgency="high",
        user_id="u",
        user_name="U",
        address=address,
        idempotency_key="k",
    )


async def test_attempts_per_endpoint_are_bounded_and_a_busy_endpoint_holds_up_no_other() -> None:
    stage = SendStage(BreakerRegistry(FakeClock()), 30, max_per_endpoint=2)
    provider = GatedProvider()
    busy = [
        asyncio.create_task(stage.send(provider, page_to(f"https://busy.example/p/{n}")))
        for n in range(6)
    ]
    other = asyncio.create_task(stage.send(provider, page_to("https://other.example/p")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert provider.in_flight == {"busy.example": 2, "other.example": 1}
    provider.gates["other.example"].set()
    assert await other == "HTTP 200"
    provider.gates["busy.example"].set()
    assert await asyncio.gather(*busy) == ["HTTP 200"] * 6
    assert provider.most["busy.example"] == 2


async def test_waiting_for_a_slot_does_not_count_against_the_attempt_timeout() -> None:
    # One slot, 30 attempts of 0.05 s each against a 1 s timeout: the last ones are asked
    # for well over 1 s before they start, and must still get their full timeout.
    stage = SendStage(BreakerRegistry(FakeClock()), 1.0, max_per_endpoint=1)

    class Slow:
        channel = "webhook"

        async def send(self, page: Page) -> str:
            await asyncio.sleep(0.05)
            return "HTTP 200"

        async def close(self) -> None:
            pass

    receipts = await asyncio.gather(
        *(stage.send(Slow(), page_to("https://one.example/p")) for _ in range(30))
    )
    assert receipts == ["HTTP 200"] * 30
    assert stage.breakers.for_endpoint("https://one.example").allow()
