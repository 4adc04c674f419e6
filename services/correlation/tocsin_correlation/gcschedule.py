"""Full garbage collections on a timer rather than on heap growth.

CPython collects its oldest generation whenever what survived into it has grown by a
quarter since the last full collection, and a full collection traverses every object in
it. A correlation worker's heap is mostly its tables (each alert and incident it keeps), and
it grows with every new alert: a busy worker traversed its whole state again each time it
grew by a quarter — 15 full collections, 2.3 s, 12 % of its CPU over the benchmark's
60,000 alerts. The tables' values are acyclic dicts and lists, freed by reference counting
the moment they are replaced: what grows is not what those traversals are for.

So the worker turns automatic full collections off and makes one every FULL_EVERY_S instead,
if anything was promoted towards the oldest generation since the last one (an idle worker
does none): cyclic garbage that lives long enough to get there is still freed, at most that
much later. The youngest generation is collected after YOUNG_THRESHOLD net allocations
rather than 700: a batch's objects live for the whole batch (hundreds of inputs), so most
young collections found them alive; over the benchmark, young collections went from 0.7 s
to 0.5 s.
"""

from __future__ import annotations

import asyncio
import gc
import os

YOUNG_THRESHOLD = 20_000
FULL_EVERY_S = float(os.environ.get("TOCSIN_CORRELATION_GC_FULL_EVERY_S", "60"))
# The oldest generation's threshold counts collections of the middle one: never reached.
_NEVER = 2**31 - 1


def collect_fully_on_timer(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Turn automatic full collections off (``collect_periodically`` makes them)."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, _NEVER)


def collect_if_promoted() -> bool:
    """A full collection, if the middle generation was collected (so something may have
    been promoted to the oldest) since the last one; whether it ran."""
    if gc.get_count()[2] == 0:
        return False
    gc.collect()
    return True


async def collect_periodically() -> None:
    # No parameters: faust passes the app to a task that takes one.
    while True:
        await asyncio.sleep(FULL_EVERY_S)
        collect_if_promoted()
