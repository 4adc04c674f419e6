"""Insight's live consumer gathers what arrives within its linger into one batch (one
PostgreSQL transaction), and the setting that sizes the linger."""

from __future__ import annotations

from typing import Any

import pytest
from tocsin_insight.ingest import FactConsumer
from tocsin_insight.service import batch_linger_s


class ScriptedConsumer:
    """getmany answers from a script of (milliseconds it takes, records it brings); a poll
    that outlasts its timeout is cut to it and brings nothing, as Kafka's would."""

    def __init__(self, script: list[tuple[int, list[str]]]) -> None:
        self.script = script
        self.now_ms = 0
        self.asked: list[tuple[int, int]] = []

    def monotonic(self) -> float:
        return self.now_ms / 1000

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[str, list[str]]:
        self.asked.append((timeout_ms, max_records))
        if not self.script:
            self.now_ms += timeout_ms
            return {}
        takes, records = self.script[0]
        if takes > timeout_ms:
            self.script[0] = (takes - timeout_ms, records)
            self.now_ms += timeout_ms
            return {}
        self.script.pop(0)
        self.now_ms += takes
        return {"tp": records[:max_records]}


def consumer(script: list[tuple[int, list[str]]], linger_ms: int, max_records: int = 2000) -> Any:
    kafka = ScriptedConsumer(script)
    fact_consumer = FactConsumer(
        kafka,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,
        max_records=max_records,
        linger_s=linger_ms / 1000,
        monotonic=kafka.monotonic,
    )
    return fact_consumer, kafka


async def test_records_arriving_within_the_linger_join_the_batch() -> None:
    fact_consumer, kafka = consumer([(50, ["b"]), (100, ["c"]), (100, ["late"])], linger_ms=200)
    assert await fact_consumer._linger(1) == ["b", "c"]
    assert kafka.now_ms == 200  # waited out the linger, not longer
    assert [timeout for timeout, _ in kafka.asked] == [200, 150, 50]
    assert kafka.script == [(50, ["late"])]  # left for the next batch


async def test_a_full_batch_stops_lingering() -> None:
    fact_consumer, kafka = consumer([(10, ["b", "c", "d"]), (10, ["e"])], 200, max_records=3)
    assert await fact_consumer._linger(1) == ["b", "c"]
    assert kafka.asked == [(200, 2)]
    assert kafka.now_ms == 10


def test_the_linger_setting() -> None:
    assert batch_linger_s({}) == 0.2
    assert batch_linger_s({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "0"}) == 0
    assert batch_linger_s({"TOCSIN_INSIGHT_BATCH_LINGER_MS": " 750 "}) == 0.75
    with pytest.raises(ValueError, match="TOCSIN_INSIGHT_BATCH_LINGER_MS: 'soon' is not"):
        batch_linger_s({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "soon"})
    with pytest.raises(ValueError, match="TOCSIN_INSIGHT_BATCH_LINGER_MS: 9000 is not within"):
        batch_linger_s({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "9000"})
