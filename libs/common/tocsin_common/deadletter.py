"""The one way a service builds a dead letter: the failed record's bytes with why, kept
small enough to be a Kafka record itself.

A record that reached its topic can be up to the broker's 1 MB; the letter wraps its key,
value and headers with a reason, so copying them whole could make a letter the broker
refuses — and the record would then be neither processed nor kept. Each part therefore
has a budget (together well under 1 MB); what is cut is said in the reason, and the
record itself stays on its topic (partition and offset are in the letter) until retention.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from tocsin.v1 import alert_pb2

from tocsin_common.timeutil import set_timestamp

MAX_VALUE_BYTES = 512 * 1024
MAX_KEY_BYTES = 16 * 1024
MAX_HEADERS_BYTES = 64 * 1024  # names and values together
MAX_REASON_CHARS = 4096


def dead_letter(
    *,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
    service: str,
    now: datetime,
) -> alert_pb2.DeadLetter:
    """A DeadLetter for the record at ``topic``/``partition``/``offset``, its parts cut to
    their budgets (the reason lists every cut)."""
    cuts: list[str] = []
    key = key or b""
    value = value or b""
    if len(value) > MAX_VALUE_BYTES:
        cuts.append(f"value cut to its first {MAX_VALUE_BYTES:,} of {len(value):,} bytes")
        value = value[:MAX_VALUE_BYTES]
    if len(key) > MAX_KEY_BYTES:
        cuts.append(f"key cut to its first {MAX_KEY_BYTES:,} of {len(key):,} bytes")
        key = key[:MAX_KEY_BYTES]
    kept: dict[str, bytes] = {}
    used = dropped = 0
    for name, header_value in headers or ():
        size = len(name.encode("utf-8", "surrogatepass")) + len(header_value or b"")
        if name in kept or used + size > MAX_HEADERS_BYTES:
            dropped += name not in kept
            continue
        kept[name] = header_value or b""
        used += size
    if dropped:
        cuts.append(f"{dropped} header(s) left out, over {MAX_HEADERS_BYTES:,} bytes of headers")
    if cuts:
        reason = f"{reason} ({'; '.join(cuts)}; the whole record stays on {topic})"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    letter = alert_pb2.DeadLetter(
        reason=reason,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key=key,
        original_value=value,
        original_headers=kept,
        failed_service=service,
    )
    set_timestamp(letter.failed_at, now)
    return letter
