"""The skipped-record guard: a jump in a partition's offsets is a legitimate gap when the
broker has no record there, skipped records otherwise (gaps.py, CorrelationWorker._in_order)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP as faust_TP
from prometheus_client import REGISTRY
from tocsin_correlation import worker
from tocsin_correlation.gaps import KnownOffsets, Verdict, judge, reread_again_from
from tocsin_correlation.worker import CorrelationWorker

TOPIC = "alerts.normalized"


@pytest.mark.parametrize(
    ("expected", "met", "first", "verdict"),
    [
        # no jump: take it
        (None, 7, None, Verdict(process=True)),
        (5, 5, None, Verdict(process=True)),
        (5, 3, None, Verdict(process=True)),  # before the expected one (read again)
        # the broker's first record from 5 is the one met: nothing in between (a marker)
        (5, 6, 6, Verdict(process=True, accepted=1)),
        (5, 9, 9, Verdict(process=True, accepted=4)),
        # ... or beyond it (deleted since): still nothing before the one met
        (5, 9, 12, Verdict(process=True, accepted=4)),
        # the broker has the expected record: all of them were skipped
        (5, 9, 5, Verdict(process=False, reread_from=5, skipped=4)),
        # it has records from 7: 5 and 6 are a gap, 7 and 8 were skipped
        (5, 9, 7, Verdict(process=False, reread_from=7, accepted=2, skipped=2)),
        # no answer: assume skipped, never lose a record
        (5, 9, None, Verdict(process=False, reread_from=5, skipped=4)),
    ],
)
def test_the_guard_s_decision(
    expected: int | None, met: int, first: int | None, verdict: Verdict
) -> None:
    assert judge(expected, met, first) == verdict


@pytest.mark.parametrize(
    ("wanted", "first", "target"),
    [(5, None, 5), (5, 5, 5), (5, 8, 8), (5, 3, 5)],
)
def test_a_seek_repeated_goes_where_the_broker_s_records_now_start(
    wanted: int, first: int | None, target: int
) -> None:
    assert reread_again_from(wanted, first) == target


@pytest.mark.parametrize(
    ("expected", "met", "first"),
    [
        (11, 12, 12),  # a marker inside the read: known without asking again
        (10, 14, 10),
        (13, 16, 14),  # 14 exists: 15 was skipped
        (9, 12, None),  # before the read's start: unknown
        (17, 20, None),  # beyond its last record: unknown
    ],
)
def test_a_read_answers_for_the_gaps_it_covers(expected: int, met: int, first: int | None) -> None:
    known = KnownOffsets(10, (10, 12, 14, 16, 18))
    assert known.first_from(expected, met) == first


# --- the worker's guard over a fake broker --------------------------------------------


class _Broker:
    """A partition's readable offsets, a consumer that records its seeks, and the probe."""

    def __init__(self, offsets: list[int], fail: bool = False) -> None:
        self.offsets = offsets
        self.fail = fail
        self.seeks: list[int] = []
        self.probes: list[int] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)

    async def offsets_from(self, topic: str, partition: int, offset: int) -> list[int]:
        self.probes.append(offset)
        if self.fail:
            raise OSError("broker unreachable")
        return [o for o in self.offsets if o >= offset][:3]


def _worker(broker: _Broker) -> Any:
    processor: Any = object.__new__(CorrelationWorker)
    processor._next_offset = {}
    processor._rereading = {}
    processor._known_offsets = {}
    processor._offset_probe = broker
    processor.app = SimpleNamespace(consumer=broker)
    return processor


TP = faust_TP(TOPIC, 0)


def _records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(tp=TP, offset=o, acked=False) for o in offsets]


def _count(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": TOPIC}) or 0.0


async def _kept(processor: Any, *offsets: int) -> list[int]:
    return [r.offset for r in await processor._in_order(_records(*offsets))]


async def test_transaction_markers_are_moved_over_without_a_seek() -> None:
    broker = _Broker([0, 2, 4, 6, 8])  # one marker after each record
    processor = _worker(broker)
    gaps = _count("tocsin_correlation_offset_gaps_accepted_total")

    assert await _kept(processor, 0, 2, 4) == [0, 2, 4]
    assert await _kept(processor, 6, 8) == [6, 8]

    assert broker.seeks == []
    assert broker.probes == [1, 7]  # the first read answered for the gaps up to 6
    assert _count("tocsin_correlation_offset_gaps_accepted_total") == gaps + 4


async def test_skipped_records_are_read_again_once() -> None:
    broker = _Broker(list(range(10)))
    processor = _worker(broker)
    rereads = _count("tocsin_correlation_rereads_total")

    assert await _kept(processor, 0, 3, 4) == [0]  # 3 and 4 set aside
    assert broker.seeks == [1]
    assert await _kept(processor, 5, 1, 2, 3, 4) == [1, 2, 3, 4]  # 5: fetched before
    assert await _kept(processor, 5) == [5]

    assert broker.seeks == [1]
    assert _count("tocsin_correlation_rereads_total") == rereads + 1


async def test_a_gap_then_skipped_records_are_read_again_from_the_first_record() -> None:
    broker = _Broker([0, 3, 4, 5])  # 1 and 2: markers
    processor = _worker(broker)

    assert await _kept(processor, 0, 5) == [0]
    assert broker.seeks == [3]
    assert await _kept(processor, 3, 4, 5) == [3, 4, 5]


async def test_records_deleted_while_awaited_are_not_awaited_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = _Broker(list(range(10)))
    processor = _worker(broker)
    assert await _kept(processor, 0, 3) == [0]
    assert broker.seeks == [1]

    broker.offsets = list(range(3, 10))  # 1 and 2 deleted (retention) before the re-read
    monkeypatch.setattr(worker, "REREAD_AGAIN_S", -1.0)  # the wait is over
    assert await _kept(processor, 3) == []  # asks again: seeks to where records start
    assert broker.seeks == [1, 3]
    assert await _kept(processor, 3, 4) == [3, 4]
    assert broker.seeks == [1, 3]


async def test_when_the_broker_cannot_be_asked_the_records_are_read_again() -> None:
    broker = _Broker([0, 2], fail=True)
    processor = _worker(broker)

    assert await _kept(processor, 0, 2) == [0]
    assert broker.seeks == [1]  # assumed skipped: nothing is lost on a guess


def test_a_partition_whose_position_is_being_reset_is_not_checked_by_faust() -> None:
    """aiokafka resets a position after OffsetOutOfRange (records deleted): faust's check
    read it and its consumer crashed on aiokafka's assertion."""
    from tocsin_common import faustapp

    states: dict[Any, Any] = {}
    subscriptions = SimpleNamespace(
        subscription=SimpleNamespace(assignment=SimpleNamespace(state_value=states.get))
    )
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
    checked: list[Any] = []
    thread: Any = SimpleNamespace(
        _ensure_consumer=lambda: consumer,
        _verify_aiokafka_event_path=lambda now, tp: checked.append(tp) or True,
    )
    resetting = faust_TP(TOPIC, 1)
    from aiokafka import TopicPartition

    states[TopicPartition(TOPIC, 1)] = SimpleNamespace(has_valid_position=False)
    states[TopicPartition(TOPIC, 2)] = SimpleNamespace(has_valid_position=True)

    assert faustapp._verify_event_path(thread, 0.0, resetting) is None
    assert checked == []  # faust's check not run
    faustapp._verify_event_path(thread, 0.0, faust_TP(TOPIC, 2))
    assert checked == [faust_TP(TOPIC, 2)]  # faust's own check
