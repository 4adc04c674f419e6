"""What the benches read of other processes from Linux /proc: CPU time and resident memory.

CPU time per event or page is the benches' steadiest figure: unlike a rate, it does not
depend on how much of the machine other processes took meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.integration.harness import ROOT

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far (OSError once it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children that still run (e.g. ingest's workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0.0
    for each in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in the process group ``pgid``."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def family_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in the process group ``pgid`` or descended from the
    process ``pgid``: PostgreSQL started through runuser puts its server and backends in
    another group, under the group's leader."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid], groups[pid] = int(fields[1]), int(fields[2])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS

    def belongs(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:  # up the parents to the group's leader
            if pid == pgid or groups.get(pid) == pgid:
                return True
            pid, seen = parents.get(pid, 0), seen + 1
        return False

    return sum(v for pid, v in cpu.items() if belongs(pid))


def infra_process_groups(names: tuple[str, ...] = ("kafka", "redis")) -> dict[str, int]:
    """The process groups of ``names`` (kafka, redis, postgres) when a devstack profile
    started them (TOCSIN_DEVSTACK_PROFILE, as `devstack.py env` exports it), else none."""
    profile = os.environ.get("TOCSIN_DEVSTACK_PROFILE", "")
    found: dict[str, int] = {}
    for name in names if profile else ():
        with contextlib.suppress(OSError, ValueError):
            found[name] = int((ROOT / ".run" / profile / "pids" / f"{name}.pid").read_text())
    return found


def own_cpu_seconds() -> float:
    """User + system CPU time of this process, every thread (a bench's load generator)."""
    times = os.times()
    return times.user + times.system


def rss_bytes(pid: int) -> int:
    """Resident memory of the process; 0 once it is gone."""
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
