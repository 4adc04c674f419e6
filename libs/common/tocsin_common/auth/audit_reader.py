"""Reading the audit topic back: every partition from the first record at ``since`` to the
end it had when the read began, filtered, newest ``limit`` kept (newest first)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError
from tocsin.v1 import auth_pb2

from tocsin_common.kafka import client_options
from tocsin_common.settings import kafka_partitions
from tocsin_common.timeutil import from_timestamp
from tocsin_common.topics import AUDIT
from tocsin_common.transport import KafkaSecurity


@dataclass(frozen=True)
class AuditQuery:
    since: datetime
    until: datetime | None = None
    actor: str = ""
    action: str = ""  # exact, or a prefix when it ends with "."
    resource_id: str = ""
    denied_only: bool = False
    limit: int = 100

    def matches(self, record: auth_pb2.AuditRecord) -> bool:
        if self.actor and record.actor != self.actor:
            return False
        if self.action:
            if self.action.endswith("."):
                if not record.action.startswith(self.action):
                    return False
            elif record.action != self.action:
                return False
        if self.resource_id and record.resource_id != self.resource_id:
            return False
        if self.denied_only and record.allowed:
            return False
        at = from_timestamp(record.at)
        return at >= self.since and (self.until is None or at < self.until)


async def read_audit(
    bootstrap: str, query: AuditQuery, security: KafkaSecurity | None = None
) -> list[auth_pb2.AuditRecord]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **client_options(security),
    )
    await consumer.start()
    try:
        count = AUDIT.partition_count(kafka_partitions())
        partitions = [TopicPartition(AUDIT.name, p) for p in range(count)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(
            {tp: int(query.since.timestamp() * 1000) for tp in partitions}
        )
        pending = set()
        for tp in partitions:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            if start < ends[tp]:
                consumer.seek(tp, start)
                pending.add(tp)
        kept: list[tuple[float, str, bytes]] = []  # a min-heap of the newest `limit`
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    try:
                        record = auth_pb2.AuditRecord.FromString(message.value or b"")
                    except DecodeError:
                        record = None  # not written by Tocsin: not an audit record
                    if record is not None and query.matches(record):
                        at = record.at.seconds + record.at.nanos / 1e9
                        item = (at, record.audit_id, message.value or b"")
                        if len(kept) < query.limit:
                            heapq.heappush(kept, item)
                        else:
                            heapq.heappushpop(kept, item)
                    if message.offset + 1 >= ends[tp]:
                        pending.discard(tp)
        kept.sort(reverse=True)
        return [auth_pb2.AuditRecord.FromString(raw) for _, _, raw in kept]
    finally:
        await consumer.stop()
