"""The Kafka broker's request counts per request type (Produce, Fetch, OffsetCommit, ...),
from its own `kafka.network:type=RequestMetrics,name=RequestsPerSec` meters.

bench/java/BrokerRequests.java attaches to the broker's JVM by pid with the JDK's Attach
API (the broker devstack starts needs no JMX port or flag) and answers a snapshot per
request on its stdin; it is started once per bench, so the JVM's start-up is paid once,
outside any measured phase. Needs a JDK (java with the jdk.attach module) and the same
user as the broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "java" / "BrokerRequests.java"


# KRaft's own traffic between the broker and its controller (the devstack runs both in one
# process), not the clients', and Fetch's sub-counts: left out of every snapshot.
CONTROL_PLANE = frozenset(
    {
        "BrokerHeartbeat",
        "BrokerRegistration",
        "ControllerRegistration",
        "Vote",
        "BeginQuorumEpoch",
        "EndQuorumEpoch",
        "DescribeQuorum",
        "FetchSnapshot",
        "AddRaftVoter",
        "RemoveRaftVoter",
        "UpdateRaftVoter",
        "AllocateProducerIds",
        "AlterPartition",
        # Sub-counts of Fetch (by consumers, by followers): Fetch already counts them.
        "FetchConsumer",
        "FetchFollower",
    }
)


class BrokerRequestsUnavailable(RuntimeError):
    """The broker's JVM could not be attached to (no JDK, another user, no pid)."""


class BrokerRequests:
    """One attached reader of a broker's request counters; `stop()` ends it."""

    def __init__(self, broker_pid: int, java: str | None = None) -> None:
        java = java or shutil.which("java")
        if java is None:
            raise BrokerRequestsUnavailable("no java on PATH")
        self._proc = subprocess.Popen(
            [java, "-XX:TieredStopAtLevel=1", "-Xmx64m", str(SOURCE), str(broker_pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self._proc.stdout.readline() if self._proc.stdout else ""
        if ready.strip() != "{}":
            self.stop()
            error = self._proc.stderr.read() if self._proc.stderr else ""
            raise BrokerRequestsUnavailable(
                f"could not attach to broker pid {broker_pid}: {error.strip()[-500:]}"
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def snapshot(self) -> dict[str, int]:
        """Requests the broker has handled since it started, per request type (but
        CONTROL_PLANE's)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise BrokerRequestsUnavailable("the JMX reader exited")
        counts: dict[str, int] = json.loads(line)
        return {name: n for name, n in counts.items() if name not in CONTROL_PLANE}

    def stop(self) -> None:
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
