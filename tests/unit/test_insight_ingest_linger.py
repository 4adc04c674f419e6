"""Insight's live consumer lets the broker gather a trickle of records into one fetch (one
batch, one PostgreSQL transaction); the setting that sizes it."""

from __future__ import annotations

import pytest
from tocsin_common.kafka import GATHER_MIN_BYTES, group_consumer
from tocsin_insight.service import batch_linger_ms


def test_the_linger_setting() -> None:
    assert batch_linger_ms({}) == 200
    assert batch_linger_ms({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "0"}) == 0
    assert batch_linger_ms({"TOCSIN_INSIGHT_BATCH_LINGER_MS": " 750 "}) == 750
    with pytest.raises(ValueError, match="TOCSIN_INSIGHT_BATCH_LINGER_MS: 'soon' is not"):
        batch_linger_ms({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "soon"})
    with pytest.raises(ValueError, match="TOCSIN_INSIGHT_BATCH_LINGER_MS: 9000 is not within"):
        batch_linger_ms({"TOCSIN_INSIGHT_BATCH_LINGER_MS": "9000"})


async def test_a_gathering_consumer_asks_the_broker_to_hold_its_fetches() -> None:
    gathering = group_consumer("127.0.0.1:9", "g", "insight", gather_ms=200)
    assert gathering._fetch_min_bytes == GATHER_MIN_BYTES
    assert gathering._fetch_max_wait_ms == 200
    # Every other consumer: the broker answers at the first record.
    plain = group_consumer("127.0.0.1:9", "g", "notification")
    assert plain._fetch_min_bytes == 1
    with pytest.raises(ValueError, match="gather_ms: -1 is negative"):
        group_consumer("127.0.0.1:9", "g", "insight", gather_ms=-1)
