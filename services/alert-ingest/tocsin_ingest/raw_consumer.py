"""Kafka ``alerts.raw``: events from tools that emit to Kafka directly.

The ``tocsin-format`` header names the wire format (events_v2, alertmanager, grafana); the
routing key comes from the ``tocsin-routing-key`` header, else from the body's
``routing_key``. ``decode_record`` is pure; ``RawRecordHandler`` is the thin handler a
ConsumerLoop (group ``tocsin-ingest-raw``) calls: a record that can never be accepted
raises BadRecord with the reason (category, then field and problem), so the loop
dead-letters it to alerts.deadletter with the original bytes and the partition moves on.
Normalized alerts are handed to the producer without waiting for each; the loop flushes
the producer before it commits offsets, so nothing counts as done before it is durable.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from aiokafka import ConsumerRecord
from tocsin.v1 import alert_pb2
from tocsin_common.clock import Clock
from tocsin_common.config import ConfigStore, TocsinConfig
from tocsin_common.kafka import BadRecord
from tocsin_common.topics import FORMAT_HEADER
from tocsin_common.validation import FieldError, InvalidInput

from tocsin_ingest import auth, fields, formats
from tocsin_ingest.publisher import AlertPublisher

GROUP_ID = "tocsin-ingest-raw"
ROUTING_KEY_HEADER = "tocsin-routing-key"
MAX_RECORD_BYTES = 512 * 1024


class RecordRejected(Exception):
    """A record that can never be accepted; ``category`` groups reasons (for metrics)."""

    def __init__(self, category: str, errors: list[FieldError]) -> None:
        self.category = category
        self.errors = errors
        super().__init__(f"{category}: " + "; ".join(str(e) for e in errors))


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace").strip()
    return None


def decode_record(
    headers: Iterable[tuple[str, bytes]] | None,
    value: bytes | None,
    config: TocsinConfig,
    received_at: datetime,
) -> list[alert_pb2.Alert]:
    """The normalized alerts of one alerts.raw record; raises RecordRejected."""
    headers = list(headers or ())
    fmt = _header(headers, FORMAT_HEADER)
    if not fmt:
        raise RecordRejected(
            "unknown format",
            [FieldError(FORMAT_HEADER, f"header is required: {', '.join(formats.NORMALIZERS)}")],
        )
    if fmt not in formats.NORMALIZERS:
        raise RecordRejected(
            "unknown format",
            [
                FieldError(
                    FORMAT_HEADER, f"{fmt[:50]!r} is not one of {', '.join(formats.NORMALIZERS)}"
                )
            ],
        )
    if value is None:
        raise RecordRejected("undecodable", [FieldError("(body)", "is empty (a tombstone)")])
    if len(value) > MAX_RECORD_BYTES:
        raise RecordRejected(
            "undecodable", [FieldError("(body)", f"is larger than {MAX_RECORD_BYTES} bytes")]
        )
    try:
        body = fields.decode_json(value)
    except InvalidInput as bad:
        raise RecordRejected("undecodable", bad.errors) from None
    key = _header(headers, ROUTING_KEY_HEADER)
    field = ROUTING_KEY_HEADER
    if not key:
        key, field = formats.body_routing_key(body), "routing_key"
    if not key:
        raise RecordRejected(
            "unknown key",
            [
                FieldError(
                    "routing_key",
                    f"is required: a {ROUTING_KEY_HEADER} header or the body's routing_key",
                )
            ],
        )
    try:
        service, _integration = auth.authenticate(config, fmt, key, field)
    except InvalidInput as bad:
        raise RecordRejected("unknown key", bad.errors) from None
    try:
        return formats.normalize(fmt, body, service.id, key, received_at)
    except InvalidInput as bad:
        raise RecordRejected("invalid event", bad.errors) from None


class RawRecordHandler:
    def __init__(self, config: ConfigStore, publisher: AlertPublisher, clock: Clock) -> None:
        self._config = config
        self._publisher = publisher
        self._clock = clock

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            alerts = decode_record(
                record.headers, record.value, self._config.current, self._clock.now()
            )
        except RecordRejected as rejected:
            raise BadRecord(str(rejected)) from None
        # Durable before the offset is committed: the loop flushes the producer first.
        await self._publisher.hand_over(alerts)
