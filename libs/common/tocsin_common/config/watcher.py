"""Reload the configuration without a restart.

A :class:`ConfigStore` holds the current configuration. It reloads when the file's content
changes (polled by :meth:`ConfigStore.watch`) or on SIGHUP (:meth:`ConfigStore.install_sighup`).
A file that fails validation never replaces a good configuration: the problems are logged on
the ``tocsin.config`` logger and the last good configuration stays in force, so a typo pushed
to a ConfigMap cannot take paging down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from .loader import ConfigError, parse_config, read_config_file
from .model import TocsinConfig

__all__ = ["ConfigStore", "Subscriber"]

log = logging.getLogger("tocsin.config")

Subscriber = Callable[[TocsinConfig], None]


class ConfigStore:
    """The configuration in force, loaded from ``path``, and the code that reloads it.

    The constructor loads the file and raises :class:`ConfigError` if it is not valid:
    at start there is no last good configuration to fall back on, so the process must stop
    with the error rather than run with nothing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._subscribers: list[Subscriber] = []
        data = read_config_file(path)
        self._current = parse_config(data, os.fspath(path))
        self._digest = _digest(data)
        # The last content seen, good or bad: watch() reloads only when it changes, so a bad
        # file is reported once, not on every poll.
        self._seen_digest = self._digest

    @property
    def current(self) -> TocsinConfig:
        """The configuration in force (the last one that loaded without errors)."""
        return self._current

    @property
    def digest(self) -> str:
        """SHA-256 of the file content the current configuration was loaded from."""
        return self._digest

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(config)`` after every successful reload; returns an unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            log.error("cannot read config file %s: %s", self.path, exc.strerror or exc)
            return None

    def reload(self) -> bool:
        """Load the file again. On success swap it in, notify subscribers and return True;
        on any problem log it, keep the last good configuration and return False."""
        data = self._read()
        if data is None:
            return False
        return self._apply(data)

    def _apply(self, data: bytes) -> bool:
        digest = _digest(data)
        self._seen_digest = digest
        try:
            config = parse_config(data, os.fspath(self.path))
        except ConfigError as exc:
            log.error(
                "config reload failed, keeping the last good configuration (%s):\n%s",
                self._digest[:12],
                exc,
            )
            return False
        self._current = config
        self._digest = digest
        log.info("config reloaded from %s (%s)", self.path, digest[:12])
        for subscriber in list(self._subscribers):
            try:
                subscriber(config)
            except Exception:
                # One broken subscriber must not stop the others from seeing the new config.
                log.exception("config subscriber %r failed", subscriber)
        return True

    async def watch(self, interval_seconds: float) -> None:
        """Poll the file every ``interval_seconds`` and reload when its content changes.

        Compares a hash of the content, not the modification time: a Kubernetes ConfigMap
        update swaps a symlink, editors may keep the mtime, and a second's mtime granularity
        can miss a quick second write. Runs until cancelled.
        """
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                data = self.path.read_bytes()
            except OSError:
                # Mid-replacement or deleted: keep the current config and look again later.
                continue
            if _digest(data) != self._seen_digest:
                self._apply(data)

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make SIGHUP reload the configuration, on ``loop`` (default: the running loop)."""
        if not hasattr(signal, "SIGHUP"):  # pragma: no cover - Windows
            return
        target = loop if loop is not None else asyncio.get_running_loop()

        def on_sighup() -> None:
            log.info("SIGHUP received, reloading config from %s", self.path)
            self.reload()

        target.add_signal_handler(signal.SIGHUP, on_sighup)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
