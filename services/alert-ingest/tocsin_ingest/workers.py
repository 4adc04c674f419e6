"""Worker processes of one alert-ingest (pure: roles and command lines, no I/O).

alert-ingest holds no state of its own between requests (rate-limit leases and heartbeat
deadlines are in Redis, everything accepted is on Kafka), so one instance can run
``TOCSIN_INGEST_WORKERS`` processes that share its HTTP port (SO_REUSEPORT: the kernel
spreads connections over them) and so use more than one core. Worker 0 is the process that
was started: it also serves gRPC and checks heartbeats, and it starts, watches and stops
the others. Every worker serves HTTP, joins the alerts.raw consumer group (when enabled)
and serves /metrics on ``TOCSIN_METRICS_PORT + index``. Worker 0 reports SERVING (gRPC
health) once every worker listens: each writes a byte to a pipe when it does. A worker stops
when worker 0 goes away (it watches a pipe whose writing end only worker 0 holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tocsin_common.settings import SettingsError

MAX_WORKERS = 64
WORKER_FLAG = "--worker"
PARENT_FD_FLAG = "--parent-fd"
READY_FD_FLAG = "--ready-fd"


@dataclass(frozen=True)
class WorkerRole:
    index: int  # 0: the process that was started
    count: int
    parent_fd: int | None = None  # a pipe that reaches end of file when worker 0 is gone
    ready_fd: int | None = None  # a pipe to tell worker 0 "listening"

    @property
    def primary(self) -> bool:
        """Serves gRPC, checks heartbeats, and runs the other workers."""
        return self.index == 0

    def metrics_port(self, base: int) -> int:
        return base + self.index

    def others(self) -> range:
        """Indexes of the workers this one starts (none unless primary)."""
        return range(1, self.count) if self.primary else range(0)


def worker_count(value: int) -> int:
    if not 1 <= value <= MAX_WORKERS:
        raise SettingsError(
            f"TOCSIN_INGEST_WORKERS={value}: expected a whole number from 1 to {MAX_WORKERS}"
        )
    return value


def role_from_argv(argv: Sequence[str], count: int) -> WorkerRole:
    """This process's role: worker 0 unless started by worker 0 with ``worker_argv``."""
    values = {WORKER_FLAG: "0", PARENT_FD_FLAG: "", READY_FD_FLAG: ""}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag not in values or not args:
            raise SettingsError(
                f"unexpected argument {flag!r}: alert-ingest takes no arguments "
                f"(its settings are TOCSIN_* environment variables)"
            )
        values[flag] = args.pop(0)
    try:
        index = int(values[WORKER_FLAG])
        parent_fd = int(values[PARENT_FD_FLAG]) if values[PARENT_FD_FLAG] else None
        ready_fd = int(values[READY_FD_FLAG]) if values[READY_FD_FLAG] else None
    except ValueError:
        raise SettingsError(f"bad worker arguments: {' '.join(argv)}") from None
    pipes = (parent_fd is not None, ready_fd is not None)
    if not 0 <= index < count or pipes != ((True, True) if index else (False, False)):
        raise SettingsError(f"bad worker arguments for {count} worker(s): {' '.join(argv)}")
    return WorkerRole(index, count, parent_fd, ready_fd)


def worker_argv(index: int, parent_fd: int, ready_fd: int) -> list[str]:
    """The arguments worker 0 starts worker ``index`` with (after ``python -m tocsin_ingest``)."""
    return [WORKER_FLAG, str(index), PARENT_FD_FLAG, str(parent_fd), READY_FD_FLAG, str(ready_fd)]
