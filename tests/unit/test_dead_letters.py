"""Dead letters fit a Kafka record whatever the record they keep, and say what they cut;
the Kafka client's undecodable records are located so their partition can move on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record import default_records
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from tocsin_common.deadletter import MAX_HEADERS_BYTES, MAX_VALUE_BYTES, dead_letter
from tocsin_common.kafka import undecodable_record_at

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KAFKA_RECORD_LIMIT = 1_048_576  # the broker's and the producer's default


def letter(**parts: Any) -> Any:
    fields: dict[str, Any] = {
        "reason": "undecodable: (body): not JSON", "topic": "alerts.raw", "partition": 3,
        "offset": 41, "key": b"k", "value": b"v", "headers": [("tocsin-format", b"events_v2")],
        "service": "alert-ingest", "now": NOW,
    }  # fmt: skip
    return dead_letter(**(fields | parts))


def test_a_small_record_is_kept_whole_with_its_reason() -> None:
    kept = letter()
    assert kept.reason == "undecodable: (body): not JSON"
    assert (kept.source_topic, kept.source_partition, kept.source_offset) == ("alerts.raw", 3, 41)
    assert (kept.original_key, kept.original_value) == (b"k", b"v")
    assert dict(kept.original_headers) == {"tocsin-format": b"events_v2"}
    assert kept.failed_at.ToDatetime(UTC) == NOW


def test_the_biggest_record_a_broker_takes_still_makes_a_letter_that_fits() -> None:
    # A value of nearly 1 MB, or the same in headers, or both: each part has a budget.
    for value, headers in [
        (b"x" * 1_040_000, []),
        (b"x" * 100, [(f"h{i}", b"y" * 100_000) for i in range(10)]),
        (b"x" * 600_000, [(f"h{i}", b"y" * 50_000) for i in range(9)]),
    ]:
        kept = letter(value=value, headers=headers, key=b"k" * 40_000)
        assert len(kept.SerializeToString()) < KAFKA_RECORD_LIMIT - 64 * 1024
        assert kept.original_value == value[:MAX_VALUE_BYTES]
        assert kept.reason.startswith("undecodable: (body): not JSON (")
        assert "the whole record stays on alerts.raw" in kept.reason
        assert "key cut to its first 16,384 of 40,000 bytes" in kept.reason


def test_headers_are_kept_in_order_while_they_fit_and_the_rest_counted() -> None:
    headers = [(f"h{i}", b"y" * 20_000) for i in range(5)]  # 100 KB against 64 KiB
    kept = letter(headers=headers)
    assert sorted(kept.original_headers) == ["h0", "h1", "h2"]  # the first three
    assert sum(len(k) + len(v) for k, v in kept.original_headers.items()) <= MAX_HEADERS_BYTES
    assert "2 header(s) left out" in kept.reason
    assert "value cut" not in kept.reason


def test_a_long_reason_is_cut_too() -> None:
    assert len(letter(reason="r" * 100_000).reason) == 4096


def _batch_with_a_bad_header_name() -> bytes:
    """Three records; the second's header name is not UTF-8 (as a hand-written producer
    can write it: aiokafka's own producer cannot)."""

    class NotUtf8(str):
        def encode(self, *args: Any, **kwargs: Any) -> bytes:
            return b"\xff\xfe"

    builder = default_records._DefaultRecordBatchBuilderPy(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=100_000,
    )  # fmt: skip
    builder.append(0, timestamp=None, key=None, value=b"a", headers=[("ok", b"1")])
    builder.append(1, timestamp=None, key=None, value=b"b", headers=[(NotUtf8("x"), b"1")])
    builder.append(2, timestamp=None, key=None, value=b"c", headers=[])
    return bytes(builder.build())


def test_the_installed_kafka_client_is_located_where_it_cannot_decode_a_record() -> None:
    """Pins tocsin_common.kafka.undecodable_record_at against the installed aiokafka: if
    an upgrade moves its record reader, this fails rather than alerts.raw stalling."""
    tp = TopicPartition("alerts.raw", 5)
    reader = PartitionRecords(
        tp, MemoryRecords(_batch_with_a_bad_header_name()), [], 0, None, None, True, 1
    )
    got = []
    with pytest.raises(UnicodeDecodeError) as raised:
        for record in reader:
            got.append(record.value)
    assert got == [b"a"]
    assert undecodable_record_at(raised.value) == (tp, 1)


def test_other_errors_are_not_located() -> None:
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as error:
        assert undecodable_record_at(error) is None
