"""The faust app factory for Tocsin's stream processors.

State lives in faust tables backed by compacted changelog topics, so a restarted worker
recovers it; the in-memory store is rebuilt from the changelog at start (no local disk
state to lose or to carry across pods). No standby tables: with the memory store a standby
saves no recovery (see make_app).

Importing this module patches faust-streaming 0.15's consumer (private methods; each
patch's docstring says why, docs/correlation.md lists them):
- ``Consumer.ack``: a record from before the last rebalance, or handed over while the flow
  is stopped, is not acked (faust's stream skips such records and acked them anyway);
- ``AIOKafkaConsumerThread.verify_event_path``: a partition whose position aiokafka is
  resetting is not checked (the check crashed the consumer);
- ``Consumer._drain_messages``: records are handed over without faust's per-record
  ``wait_first`` while the flow is active, and straight into the queue of a channel
  registered with :func:`deliver_directly`.

Not patched (tried, and reverted): pausing at the aiokafka client the partitions faust
does not read. faust's own pause only filters the records fetched, so every changelog
partition is in every fetch request (94 partitions a fetch at 50/s, 58 of them changelogs,
where 37 would do). Making the client's pause state follow faust's active set stalled a
table's recovery in the failure suite: after a worker was killed, the survivor's recovery
of the changelog partitions it took over received no record for minutes (two runs of two;
with the patch disabled the same suite passed). Narrowing the fetch needs a design in which
recovery reads changelogs with a consumer of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import Message

from tocsin_common.runtime import event_loop_factory
from tocsin_common.settings import Settings
from tocsin_common.topics import Topic
from tocsin_common.transport import KafkaSecurity

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

_faust_verify_event_path = AIOKafkaConsumerThread.verify_event_path


def _verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: Any) -> None:
    """faust's check that a partition's stream keeps up, except for a partition whose
    position is being reset (aiokafka met OffsetOutOfRange: retention deleted the records
    it was to read next). faust reads that position, which aiokafka asserts is set: the
    assertion crashed faust's consumer (met by tests/integration/test_correlation_gaps.py
    when the check ran during the reset)."""
    consumer = self._ensure_consumer()
    state = consumer._fetcher._subscriptions.subscription.assignment.state_value(
        TopicPartition(tp.topic, tp.partition)
    )
    if state is not None and not state.has_valid_position:
        return None
    return _faust_verify_event_path(self, now, tp)


AIOKafkaConsumerThread.verify_event_path = _verify_event_path  # type: ignore[method-assign]


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - a loop
    """faust's Consumer._drain_messages (the loop handing fetched records to the
    conductor), except that a record is handed over by awaiting the conductor's callback
    directly while the flow is active.

    faust wraps every record's callback in ``wait_first(callback, suspend_flow.wait())``,
    so that a rebalance stopping the flow interrupts a callback blocked in it: four tasks
    and an ``asyncio.wait`` per record, the biggest cost of consuming (a correlation worker
    spent more on it than on its engine). While the flow is active the callback does not
    wait on the flow (its first step, ``acquire_flow_control``, returns at once); what it
    can wait on then (a full stream queue, the producer's buffer) is emptied by the agents
    and the producer, not by this loop. So it is awaited as is, and faust's wait_first is
    kept for a record met while the flow is stopped. Everything else is faust's loop
    (faust-streaming 0.15), unchanged, except for the topics of a channel registered with
    :func:`deliver_directly`.
    """
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    suspend_flow = self.suspend_flow
    flow_control = self.app.flow_control

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    direct: dict[str, Any] = self.app.__dict__.setdefault(_DIRECT, {})

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if not suspend_flow.is_set() and flow_control.is_active():
                            queue = direct.get(message.topic) if direct else None
                            if queue is None:
                                await callback(message)
                            elif queue.maxsize <= 0 or queue.qsize() < queue.maxsize:
                                queue.force_put_nowait(message)
                            else:  # full: wait for room (and for the flow)
                                await queue.put(message)
                        elif message.topic in direct:
                            pass  # from before a rebalance: read again after its seek
                        else:
                            await self.wait_first(callback(message), suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]

_DIRECT = "_tocsin_direct_queues"  # app attribute: topic -> the queue its records go to


def deliver_directly(app: faust.App, channel: Any) -> None:
    """Hand the records of `channel`'s topics to its queue as they are fetched: faust's
    Message (key, value and headers as bytes), not through the conductor.

    For a consumer that takes the records from the queue itself and acks each with
    ``app.consumer.ack`` (it must ack every record it is handed while the flow is active).
    The conductor's path is a lock, the flow and producer-buffer checks, a decode and an
    Event per record, then a put into the same queue: for a correlation worker that took
    more time than anything but its engine. A record met while the flow is stopped
    (rebalancing) is left, as the conductor's path leaves it, unacked: the rebalance's
    seek reads it again. The queue is faust's, so a rebalance clears it and stopping an
    agent still throws into it.
    """
    queues: dict[str, Any] = app.__dict__.setdefault(_DIRECT, {})
    for topic in channel.topics:
        queues[topic] = channel.queue


class _LoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's policy, making its new loops with `new_loop`."""

    def __init__(self, new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__()
        self._new_loop = new_loop

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._new_loop()


def worker_event_loop(env: Mapping[str, str]) -> asyncio.AbstractEventLoop:
    """A new event loop, set as current, for a faust worker to run on: of the services' kind
    (``runtime.event_loop_factory``: uvloop unless ``TOCSIN_EVENT_LOOP=asyncio``), as are
    the loops the process's threads make for themselves with ``asyncio.new_event_loop()``
    (faust's consumer thread, mode's ServiceThread, fetches and hands over every record)."""
    new_loop = event_loop_factory(env)
    if new_loop is not asyncio.new_event_loop:  # asyncio's own: the default policy's
        asyncio.set_event_loop_policy(_LoopPolicy(new_loop))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def broker_credentials(security: KafkaSecurity) -> faust.types.auth.CredentialsT | None:
    """faust's form of the Kafka security settings (it hands them to aiokafka): SASL with
    the CA-verifying SSL context under SASL_SSL, SSL alone, or None for PLAINTEXT."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            mechanism=security.sasl_mechanism,
            ssl_context=security.ssl_context(),
        )
    if security.uses_ssl:
        return faust.SSLCredentials(security.ssl_context())
    return None


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
        # No standby replicas: the memory store keeps no offset (faust's memory store's
        # persisted_offset is always None), so a worker taking over a partition recovers
        # its tables from the changelog's start whatever a standby read before. A standby
        # would only make every worker fetch the others' changelogs all the time.
        "table_standby_replicas": 0,
    }
    credentials = broker_credentials(settings.kafka_security)
    if credentials is not None:
        options["broker_credentials"] = credentials
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
