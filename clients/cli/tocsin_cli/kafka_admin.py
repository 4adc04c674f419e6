"""``tocsin admin``: Kafka seen from the operator's chair, with kafka-python (a plain,
synchronous client: a command runs one request after another and exits).

The rows each command prints are computed by pure functions (:func:`topic_rows`,
:func:`lag_rows`, :func:`replay_rows`) from what the broker answered, so the unit tests
check them without a broker; :class:`KafkaAdmin` does the asking.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tocsin_common.topics import ALL_TOPICS, CONSUMER_GROUPS, Topic
from tocsin_common.transport import KafkaSecurity

from tocsin_cli.exitcodes import CliError, Exit

# Group states in which no consumer is a member: offsets may be changed then only.
IDLE_STATES = ("Empty", "Dead", "")
RETRY_PAUSE_S = 0.3


@dataclass(frozen=True)
class TopicRow:
    topic: str
    expected_partitions: int
    partitions: int | None  # None: the topic does not exist
    status: str  # ok, missing, wrong partitions

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def topic_rows(
    expected: Iterable[Topic], actual: Mapping[str, int], configured: int
) -> list[TopicRow]:
    """Each of Tocsin's topics against what the broker has (topic name → partitions), the
    pipeline's topics expected with ``configured`` partitions (TOCSIN_KAFKA_PARTITIONS)."""
    rows = []
    for topic in expected:
        found = actual.get(topic.name)
        wanted = topic.partition_count(configured)
        if found is None:
            status = "missing"
        elif found != wanted:
            status = f"has {found} partitions, expected {wanted}"
        else:
            status = "ok"
        rows.append(TopicRow(topic.name, wanted, found, status))
    return rows


@dataclass(frozen=True)
class LagRow:
    group: str
    service: str
    topic: str
    partitions: int
    committed: int  # sum over the partitions with a committed offset
    end: int  # sum of the partitions' end offsets
    lag: int  # records not yet processed (a partition with no commit counts from its start)
    uncommitted_partitions: int  # partitions the group has never committed on


def lag_rows(
    group: str,
    service: str,
    topics: Sequence[str],
    committed: Mapping[tuple[str, int], int],
    starts: Mapping[tuple[str, int], int],
    ends: Mapping[tuple[str, int], int],
) -> list[LagRow]:
    """A group's lag per topic: end offset minus committed offset, summed over the topic's
    partitions. A partition with no committed offset lags by everything it retains (end -
    start): the group would read it all (auto_offset_reset=earliest, as Tocsin's are)."""
    rows = []
    for topic in topics:
        partitions = sorted(p for (t, p) in ends if t == topic)
        total_committed = total_end = lag = never = 0
        for partition in partitions:
            key = (topic, partition)
            end = ends[key]
            total_end += end
            if key in committed:
                total_committed += committed[key]
                lag += max(0, end - committed[key])
            else:
                never += 1
                lag += max(0, end - starts.get(key, 0))
        rows.append(
            LagRow(group, service, topic, len(partitions), total_committed, total_end, lag, never)
        )
    return rows


@dataclass(frozen=True)
class ReplayRow:
    topic: str
    partition: int
    before: int | None  # the committed offset before, None when there was none
    after: int


def replay_rows(
    before: Mapping[tuple[str, int], int], after: Mapping[tuple[str, int], int]
) -> list[ReplayRow]:
    return [
        ReplayRow(topic, partition, before.get((topic, partition)), offset)
        for (topic, partition), offset in sorted(after.items())
    ]


def group_service(group: str) -> str:
    """The Tocsin service whose consumer group ``group`` is ("-" for another)."""
    for known in CONSUMER_GROUPS:
        if known.group_id == group:
            return known.service
    return "-"


class KafkaAdmin:
    """kafka-python's admin client, connected to ``bootstrap`` with this process's Kafka
    security settings (TOCSIN_KAFKA_SECURITY_PROTOCOL..., as the services)."""

    def __init__(self, bootstrap: str, timeout_s: float = 15.0) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError
        from tocsin_common.kafka import client_options

        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.options: dict[str, Any] = {}
        try:
            self.options = client_options(KafkaSecurity.from_env())
            self.client: Any = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="tocsin-cli",
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
                **self.options,
            )
        except KafkaError as exc:
            raise CliError(self._unreachable(exc), Exit.UNREACHABLE) from None
        except ValueError as exc:  # the transport settings
            raise CliError(str(exc), Exit.USAGE) from None

    def close(self) -> None:
        self.client.close()

    def _unreachable(self, exc: Exception) -> str:
        # kafka-python reports a refused SASL login as a failed bootstrap: say it may be that.
        login = self.options.get("sasl_plain_username")
        hint = f" (or it refused the SASL login of user {login!r})" if login else ""
        return f"cannot reach Kafka at {self.bootstrap}{hint}: {exc}"

    def call(self, method: str, *args: Any) -> Any:
        """``self.client.<method>(*args)``, retried while Kafka answers a retriable error
        (a coordinator still being elected when a group is first used, a leader moving),
        up to the timeout; any other failure is a :class:`CliError` naming the call."""
        from kafka.errors import KafkaConnectionError, KafkaError

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return getattr(self.client, method)(*args)
            except KafkaConnectionError as exc:
                raise CliError(self._unreachable(exc), Exit.UNREACHABLE) from None
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise CliError(f"Kafka: {method} failed: {exc}", Exit.ERROR) from None
                time.sleep(RETRY_PAUSE_S)

    def __enter__(self) -> KafkaAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def partition_counts(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Topic name → partition count, for the topics that exist."""
        existing = set(self.call("list_topics"))
        wanted = [n for n in (names or sorted(existing)) if n in existing]
        if not wanted:
            return {}
        described = self.call("describe_topics", wanted)
        out: dict[str, int] = {}
        for topic in described:
            name = topic.get("name") or topic.get("topic")
            if name and not topic.get("error_code"):
                out[str(name)] = len(topic.get("partitions") or [])
        return out

    def topics(self, configured: int) -> list[TopicRow]:
        return topic_rows(
            ALL_TOPICS, self.partition_counts([t.name for t in ALL_TOPICS]), configured
        )

    def _offsets(
        self, partitions: Sequence[tuple[str, int]], spec: Any
    ) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition

        if not partitions:
            return {}
        answer = self.call(
            "list_partition_offsets", {TopicPartition(t, p): spec for t, p in partitions}
        )
        return {(tp.topic, tp.partition): int(o.offset) for tp, o in answer.items()}

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        answer = self.call("list_group_offsets", {group: None}).get(group, {})
        return {
            (tp.topic, tp.partition): int(meta.offset)
            for tp, meta in answer.items()
            if meta is not None and meta.offset >= 0
        }

    def group_ids(self) -> list[str]:
        found = {str(g.get("group_id")) for g in self.call("list_groups")}
        return sorted(found)

    def describe_group(self, group: str) -> tuple[str, int]:
        """(state, number of members) of a consumer group."""
        answer = self.call("describe_groups", [group]).get(group) or {}
        state = str(answer.get("group_state") or answer.get("state") or "")
        return state, len(answer.get("members") or [])

    def lag(self, groups: Sequence[str] | None = None) -> list[LagRow]:
        """Lag per topic of Tocsin's service groups (and of ``groups`` when given: any)."""
        from kafka.admin import OffsetSpec

        wanted: list[tuple[str, str, tuple[str, ...] | None]]
        if groups:
            wanted = [(g, group_service(g), None) for g in groups]
        else:
            wanted = [(g.group_id, g.service, g.topics) for g in CONSUMER_GROUPS]
        rows: list[LagRow] = []
        for group, service, known_topics in wanted:
            committed = self.committed(group)
            topics = list(known_topics or sorted({t for t, _ in committed}))
            counts = self.partition_counts(topics)
            partitions = [(t, p) for t in topics for p in range(counts.get(t, 0))]
            ends = self._offsets(partitions, OffsetSpec.LATEST)
            starts = self._offsets(partitions, OffsetSpec.EARLIEST)
            rows.extend(lag_rows(group, service, topics, committed, starts, ends))
        return rows

    def replay_plan(
        self, group: str, topic: str, to_datetime: datetime | None
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """(committed offsets now, the offsets a replay would commit): the earliest retained
        offset of each partition, or the first at or after ``to_datetime`` (the end when
        none is). Refuses (CONFLICT) while the group has members: a running consumer would
        overwrite the reset with its next commit."""
        from kafka.admin import OffsetSpec, OffsetTimestamp

        self.refuse_if_active(group)
        counts = self.partition_counts([topic])
        if topic not in counts:
            raise CliError(f"--topic {topic}: no such topic on {self.bootstrap}", Exit.NOT_FOUND)
        partitions = [(topic, p) for p in range(counts[topic])]
        if to_datetime is None:
            target = self._offsets(partitions, OffsetSpec.EARLIEST)
        else:
            millis = int(to_datetime.timestamp() * 1000)
            target = self._offsets(partitions, OffsetTimestamp(millis))
            ends = self._offsets(partitions, OffsetSpec.LATEST)
            target = {k: (v if v >= 0 else ends[k]) for k, v in target.items()}
        before = {k: v for k, v in self.committed(group).items() if k[0] == topic}
        return before, target

    def refuse_if_active(self, group: str) -> None:
        state, members = self.describe_group(group)
        if members or state not in IDLE_STATES:
            raise CliError(
                f"group {group} has {members} active member(s) (state {state}): stop its "
                "consumers first, a running consumer would overwrite the new offsets",
                Exit.CONFLICT,
            )

    def commit(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        from kafka import TopicPartition

        # The group must still be idle: check again right before writing.
        self.refuse_if_active(group)
        answer = self.call(
            "reset_group_offsets",
            group,
            {TopicPartition(t, p): int(o) for (t, p), o in offsets.items()},
        )
        failed = {
            f"{tp.topic}[{tp.partition}]": result["error"].__name__
            for tp, result in answer.items()
            if result["error"].__name__ != "NoError"
        }
        if failed:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
            raise CliError(f"Kafka refused some offsets of group {group}: {detail}", Exit.ERROR)
