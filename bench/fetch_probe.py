"""A correlation worker (python -m tocsin_correlation) that also counts what its consumer
puts in each fetch request: run by bench/fetch_width_bench.py as the worker's module.

aiokafka builds fetch requests in ``Fetcher._get_actions_per_node``; the wrapper counts,
per request of the group consumer (the one fetching alerts.normalized), the partitions in
it and how many of them are changelog partitions; and the produce requests of the worker's
batch sender (incident events, changelog records), and how many carry both. It writes the running totals as JSON
to ``TOCSIN_FETCH_PROBE_OUT`` (at most once a second, and at exit). Measurement only: the
worker itself is unchanged.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.sender import SendProduceReqHandler

OUT = Path(os.environ["TOCSIN_FETCH_PROBE_OUT"])
INPUT_TOPIC = "alerts.normalized"
totals: dict[str, int] = {
    "requests": 0,
    "partitions": 0,
    "changelog_partitions": 0,
    # produce requests of the worker's batch sender, and those carrying both incident
    # events and changelog records
    "produce_requests": 0,
    "produce_requests_mixed": 0,
}
_lock = threading.Lock()
_written = [0.0]


def _write() -> None:
    with _lock:
        text = json.dumps(totals)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(OUT)


_original = Fetcher._get_actions_per_node


def _counting(self: Any, assignment: Any) -> Any:
    result = _original(self, assignment)
    for _node, request in result[0]:
        topics = request._topics  # [(topic, [(partition, offset, max_bytes), ...]), ...]
        if not any(topic == INPUT_TOPIC for topic, _ in topics):
            continue
        with _lock:
            totals["requests"] += 1
            for topic, partitions in topics:
                totals["partitions"] += len(partitions)
                if topic.endswith("-changelog"):
                    totals["changelog_partitions"] += len(partitions)
    now = time.monotonic()
    if now - _written[0] >= 1.0:
        _written[0] = now
        _write()
    return result


Fetcher._get_actions_per_node = _counting  # type: ignore[method-assign]

_original_produce = SendProduceReqHandler.create_request


def _counting_produce(self: Any) -> Any:
    if self._client._client_id.endswith("-batches"):  # the worker's BatchSender
        topics = {tp.topic for tp in self._batches}
        with _lock:
            totals["produce_requests"] += 1
            if "incidents.events" in topics and any(t.endswith("-changelog") for t in topics):
                totals["produce_requests_mixed"] += 1
    return _original_produce(self)


SendProduceReqHandler.create_request = _counting_produce  # type: ignore[method-assign]
atexit.register(_write)

if __name__ == "__main__":
    from tocsin_correlation.__main__ import main

    main()
