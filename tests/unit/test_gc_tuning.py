"""The garbage collector's settings (tocsin_common.gc_tuning): a frozen startup heap, or full
collections on a timer; either way cyclic garbage is still freed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from tocsin_common import gc_tuning


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.collect()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _cycle_in_oldest_generation() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gc.collect(1)  # promoted into the oldest generation
    assert any(obj is a for obj in gc.get_objects(generation=2))
    return weakref.ref(a)


def test_full_collections_wait_for_the_timer(thresholds: None) -> None:
    gc_tuning.collect_fully_on_timer(young_threshold=50)
    assert gc.get_threshold()[0] == 50
    garbage = _cycle_in_oldest_generation()
    # The heap grows by more than a quarter (CPython's trigger of a full collection),
    # through young collections by the thousand: no full one.
    grown = [[] for _ in range(len(gc.get_objects()))]
    assert garbage() is not None
    del grown
    assert gc_tuning.collect_if_promoted()
    assert garbage() is None


def test_no_full_collection_when_nothing_was_promoted(thresholds: None) -> None:
    gc_tuning.collect_fully_on_timer()
    gc.collect()
    assert not gc_tuning.collect_if_promoted()


async def test_the_timer_collects_what_reached_the_oldest_generation(thresholds: None) -> None:
    gc_tuning.collect_fully_on_timer(young_threshold=50)
    garbage = _cycle_in_oldest_generation()
    timer = asyncio.create_task(gc_tuning.collect_periodically(0.01))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if garbage() is None:
                break
        assert garbage() is None
    finally:
        timer.cancel()


# --- a frozen startup heap (notification, escalation) -----------------------------------


def test_the_startup_heap_is_frozen_and_the_young_generation_collected_less_often(
    thresholds: None,
) -> None:
    held = [_Node() for _ in range(1000)]  # what the process holds once started
    gc_tuning.freeze_startup_heap(young_threshold=5000)
    assert gc.get_freeze_count() >= len(held)
    assert gc.get_threshold()[0] == 5000


def test_cyclic_garbage_made_after_the_freeze_is_still_collected_automatically(
    thresholds: None,
) -> None:
    # A page's reference cycle (e.g. an exception and its traceback) must not leak: with
    # no explicit gc.collect(), allocations past the young threshold free it.
    gc_tuning.freeze_startup_heap(young_threshold=5000)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    kept: list[list[int]] = [[] for _ in range(3 * 5000)]  # young collections run
    assert gone() is None
    del kept
