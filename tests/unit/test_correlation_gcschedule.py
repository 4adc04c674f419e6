"""Full collections on a timer (gcschedule.py): automatic ones off, and cyclic garbage that
reached the oldest generation still freed by the timed one."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from tocsin_correlation import gcschedule


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
        gc.set_threshold(*before)


def _cycle_in_oldest_generation() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gc.collect(1)  # promoted into the oldest generation
    assert any(obj is a for obj in gc.get_objects(generation=2))
    return weakref.ref(a)


def test_full_collections_wait_for_the_timer(thresholds: None) -> None:
    gcschedule.collect_fully_on_timer(young_threshold=50)
    assert gc.get_threshold()[0] == 50
    garbage = _cycle_in_oldest_generation()
    # The heap grows by more than a quarter (CPython's trigger of a full collection),
    # through young collections by the thousand: no full one.
    grown = [[] for _ in range(len(gc.get_objects()))]
    assert garbage() is not None
    del grown
    assert gcschedule.collect_if_promoted()
    assert garbage() is None


def test_no_full_collection_when_nothing_was_promoted(thresholds: None) -> None:
    gcschedule.collect_fully_on_timer()
    gc.collect()
    assert not gcschedule.collect_if_promoted()
