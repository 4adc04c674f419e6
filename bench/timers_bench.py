"""Timer precision with 100,000 pending: schedule N timers in Redis, due spread over a window,
run the real timer loop (RedisTimerStore + TimerLoop, the code escalation runs) and report
how late each fired, as JSON.

    TOCSIN_REDIS_URL=redis://127.0.0.1:31079/0 python bench/timers_bench.py \
        [--timers 100000] [--window 20] [--lead 5] [--replicas 1]

Keys live under a prefix of their own (``bench:<random>:``) and are removed at the end, so a
shared Redis is not disturbed. Every timer must fire exactly once: the JSON says how many
fired, how many twice, and lateness p50/p99/max in milliseconds (fired at - due).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in ("libs/common", "services/escalation"):
    sys.path.insert(0, str(ROOT / extra))

from redis.asyncio import Redis
from tocsin_common.clock import SystemClock
from tocsin_escalation.timers import (
    ClaimedTimer,
    RedisTimerStore,
    Timer,
    TimerLoop,
    to_ms,
)

from bench.results_io import add_out_argument, report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=20.0, help="seconds the dues span")
    parser.add_argument(
        "--lead", type=float, default=25.0, help="seconds before the first due (> scheduling time)"
    )
    parser.add_argument("--replicas", type=int, default=1, help="timer loops sharing the store")
    add_out_argument(parser)
    args = parser.parse_args()

    redis = Redis.from_url(os.environ.get("TOCSIN_REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"bench:{os.urandom(4).hex()}:"
    store = RedisTimerStore(redis, prefix=prefix)
    clock = SystemClock()

    start = time.time() + args.lead
    dues = {
        f"inc{n % 5000}|t{n}": to_ms(start + args.window * n / args.timers)
        for n in range(args.timers)
    }
    scheduled_at = time.perf_counter()
    items = list(dues.items())
    for i in range(0, len(items), 5000):
        await store.schedule([Timer(tid, due, b"{}") for tid, due in items[i : i + 5000]])
    schedule_s = time.perf_counter() - scheduled_at
    pending = await store.pending()

    fired: dict[str, int] = {}
    lateness: list[float] = []

    async def handler(claimed: ClaimedTimer) -> None:
        lateness.append(time.time() * 1000 - dues[claimed.timer_id])
        fired[claimed.timer_id] = fired.get(claimed.timer_id, 0) + 1

    loops = [TimerLoop(store, clock, handler) for _ in range(args.replicas)]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    deadline = start + args.window + 30
    while len(fired) < args.timers and time.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # time for any double fire to show
    for loop in loops:
        loop.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    left = await store.pending()
    # Clean up whatever is left under the bench prefix.
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        await redis.delete(key)
    await redis.aclose()

    report(
        {
            "benchmark": "escalation timers",
            "scheduled": args.timers,
            "pending_at_start": pending,
            "window_s": args.window,
            "replicas": args.replicas,
            "schedule_s": round(schedule_s, 2),
            "fired": len(fired),
            "fired_twice": sum(1 for c in fired.values() if c > 1),
            "left_in_store": left,
            "lateness_ms": {
                "p50": round(percentile(lateness, 0.50), 1) if lateness else None,
                "p99": round(percentile(lateness, 0.99), 1) if lateness else None,
                "max": round(max(lateness), 1) if lateness else None,
                "min": round(min(lateness), 1) if lateness else None,
            },
        },
        args.out,
    )


if __name__ == "__main__":
    asyncio.run(main())
