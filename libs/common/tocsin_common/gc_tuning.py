"""CPython's cyclic garbage collector, set for a service's heap.

Defaults hurt a Tocsin service two ways, both measured:
- **The young generation is collected every 700 net allocations.** The objects of a batch or
  of the pages in flight (messages, tasks, futures) live longer than that, so most were
  traversed in the young and the middle generation only to survive both.
- **The oldest generation is collected whenever it grew by a quarter**, and each such
  collection traverses all of it: in notification, what it holds from the start (modules,
  the config with every user: ~135 ms a collection with 5,000 users); in correlation, its
  tables, which grow with every alert (15 full collections, 2.3 s, 12 % of a worker's CPU
  over 60,000 alerts). Table values are acyclic dicts and lists and the config lives as
  long as the process: reference counting frees the first when replaced, and the second is
  never garbage, so those traversals found next to nothing.

So each service raises the young threshold to YOUNG_THRESHOLD and then either
- `freeze_startup_heap`: what the process holds once started goes to the permanent
  generation, which collections skip (notification, escalation); cyclic
  garbage made later is still collected automatically, by every generation; or
- `collect_fully_on_timer` + `collect_periodically`: no automatic full collections, one
  every few seconds instead if anything reached the oldest generation since (correlation,
  whose heap keeps growing after the start).
"""

from __future__ import annotations

import asyncio
import gc

YOUNG_THRESHOLD = 20_000
# The oldest generation's threshold counts collections of the middle one: never reached.
_NEVER = 2**31 - 1


def freeze_startup_heap(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Collect what starting left behind, freeze the rest, raise the young threshold. Call
    once, when the process has started and before it takes work. (A config reloaded later
    and dropped is freed by reference counting; only a cycle in it would stay.)"""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, oldest)


def collect_fully_on_timer(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Turn automatic full collections off (``collect_periodically`` makes them) and raise
    the young threshold."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, _NEVER)


def collect_if_promoted() -> bool:
    """A full collection, if the middle generation was collected (so something may have
    been promoted to the oldest) since the last one; whether it ran."""
    if gc.get_count()[2] == 0:
        return False
    gc.collect()
    return True


async def collect_periodically(every_s: float) -> None:
    """With ``collect_fully_on_timer``: cyclic garbage that reached the oldest generation is
    freed at most `every_s` later (an idle process collects nothing)."""
    while True:
        await asyncio.sleep(every_s)
        collect_if_promoted()
