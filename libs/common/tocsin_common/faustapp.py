"""The faust app factory for Tocsin's stream processors.

State lives in faust tables backed by compacted changelog topics, so a restarted worker
recovers it; the in-memory store is rebuilt from the changelog at start (no local disk
state to lose or to carry across pods).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types import Message

from tocsin_common.settings import Settings
from tocsin_common.topics import Topic

_faust_ack = Consumer.ack


def _ack_if_current(self: Consumer, message: Message) -> bool:
    """faust's Consumer.ack, except for a message from before the last rebalance, or one
    handed to a stream while the flow is suspended (rebalancing, recovering tables).

    faust's stream *skips* such messages and acks them anyway, so their offsets become
    committable although no agent saw them. They are fetched again after the rebalance's
    seek to the committed offsets — unless the commit got there first: then they are lost.
    Left unacked, the commit cannot pass them until they are processed. (The failure suite
    lost runs of alerts while a restarted correlation worker took over; this is one way,
    the worker's offset check catches the others.)
    """
    app = self.app
    if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
        return False
    return _faust_ack(self, message)


Consumer.ack = _ack_if_current  # type: ignore[method-assign]


def make_app(settings: Settings, app_id: str, **overrides: Any) -> faust.App:
    # faust creates only the last level of its data folder.
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": "memory://",
        "datadir": settings.data_dir,
        "web_enabled": False,
        "topic_replication_factor": 1 if "," not in settings.kafka_bootstrap else 3,
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_interval": 0.5,
        # A killed worker's partitions move to the others after 10 s, not faust's 60 s.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "stream_wait_empty": False,
        "topic_allow_declare": True,
    }
    options.update(overrides)
    return faust.App(app_id, **options)


def raw_topic(app: faust.App, topic: Topic) -> Any:
    """A faust topic whose keys and values are bytes (protobuf is decoded by the agent)."""
    return app.topic(
        topic.name,
        partitions=topic.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
