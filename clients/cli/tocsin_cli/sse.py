"""Server-Sent Events for ``tocsin tail``: the parser (pure, as the WHATWG HTML standard's
"event stream interpretation" says) and the resuming loop.

The loop keeps the id of the last event it handed out; when the connection drops (the api
restarted, a proxy timed out) it connects again with ``Last-Event-ID`` set to it, so the
api replays what came after it and no event is lost or shown twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class SseParser:
    """Feed lines (without their line endings); complete events come out."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None  # the stream's last event id, as the standard keeps it
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return Event(
            event_id if event_id is not None else self.last_id, event or "message", "\n".join(data)
        )


def parse(lines: Iterable[str]) -> Iterator[Event]:
    parser = SseParser()
    for line in lines:
        event = parser.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event


class StreamDropped(Exception):
    """The connection ended or failed; the loop connects again."""


Open = Callable[[str | None], Iterable[str]]


def resume_forever(
    open_stream: Open,
    last_event_id: str | None = None,
    *,
    on_reconnect: Callable[[str | None, Exception], None] = lambda _id, _exc: None,
    sleep: Callable[[float], None] = time.sleep,
    backoff: tuple[float, float] = (0.5, 10.0),
    max_reconnects: int | None = None,
) -> Iterator[Event]:
    """Events from ``open_stream(last_event_id)`` forever: on :class:`StreamDropped` (or an
    end of stream) open it again from the last id handed out, waiting ``backoff[0]`` seconds,
    doubling up to ``backoff[1]`` while connections keep failing before any event."""
    delay = backoff[0]
    reconnects = 0
    while True:
        try:
            parser = SseParser()
            for line in open_stream(last_event_id):
                event = parser.feed(line.rstrip("\r\n"))
                if event is None:
                    continue
                if event.id is not None:
                    last_event_id = event.id
                delay = backoff[0]
                yield event
            error: Exception = StreamDropped("the api ended the stream")
        except StreamDropped as exc:
            error = exc
        if max_reconnects is not None and reconnects >= max_reconnects:
            raise error
        reconnects += 1
        on_reconnect(last_event_id, error)
        sleep(delay)
        delay = min(delay * 2, backoff[1])
