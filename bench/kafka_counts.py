"""What the broker holds, counted: records per topic (the sum of its partitions' end
offsets), every topic the broker has, faust's changelogs and Kafka's internal topics
included. A bench takes one count before a phase and one after; the difference over the
phase's alerts is its records per alert.

Counting is one Metadata and one ListOffsets round trip per call, from an admin client and
a consumer that joins no group and fetches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tocsin_common.kafka import client_options

INTERNAL_PREFIX = "__"  # __consumer_offsets, __transaction_state, ...


async def partitions(
    admin: AIOKafkaAdminClient, topics: Sequence[str] | None = None
) -> list[TopicPartition]:
    """The partitions of ``topics`` (None: of every topic, internal ones included), from one
    Metadata request."""
    described = await admin.describe_topics(list(topics) if topics is not None else None)
    return sorted(
        TopicPartition(str(t["topic"]), int(p["partition"]))
        for t in described
        for p in t["partitions"]
    )


class TopicCounter:
    """End offsets of every topic on the broker, on open connections. Each count costs the
    broker one Metadata and one ListOffsets request (REQUESTS_PER_COUNT)."""

    REQUESTS_PER_COUNT = {"Metadata": 1, "ListOffsets": 1}

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="tocsin-bench-counts", **client_options()
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="tocsin-bench-counts",
            enable_auto_commit=False,
            **client_options(),
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def end_offsets(self) -> dict[str, int]:
        """Records written so far, per topic (sum over its partitions); topics created
        since the last count (changelogs) included."""
        tps = await partitions(self._admin)
        ends = await self._consumer.end_offsets(tps) if tps else {}
        totals: dict[str, int] = {}
        for tp, end in ends.items():
            totals[tp.topic] = totals.get(tp.topic, 0) + end
        return totals


def split_internal(counts: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(Tocsin's topics and faust's changelogs, Kafka's internal topics such as
    __consumer_offsets, where every offset commit is a record)."""
    internal = {t: n for t, n in counts.items() if t.startswith(INTERNAL_PREFIX)}
    return {t: n for t, n in counts.items() if t not in internal}, internal
