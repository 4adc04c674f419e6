"""Server-Sent Events framing (pure): one ``incident`` event per applied incident event,
its ``id`` the Watch position to resume after (``Last-Event-ID``)."""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = b": keepalive\n\n"


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    # json.dumps escapes newlines inside strings: the data is always one line.
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


def parse(text: str) -> list[dict[str, str]]:
    """The events in an SSE text (for clients and tests): each with id, event, data."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            events.append(fields)
    return events
