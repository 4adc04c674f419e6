"""Staged table writes: what a batch of inputs changed, kept aside until its output is durable.

The worker runs the engine over a batch of inputs against :class:`StagedMapping` views of its
tables. Reads see the table plus what the batch wrote; writes stay in the view. Only after
every incident event of the batch is acknowledged by Kafka are the writes applied to the
tables (and so to their changelogs). The order is what makes a crash safe:

- killed before the events are durable: nothing of the batch reached the changelogs, the
  inputs' offsets were not committed, and the replay computes the same events again;
- killed after: the events are out; a replay may meet the batch's state (all or some of
  it) and compute something else, but nothing it should have said is missing downstream.

While a batch is made durable, the worker computes the next one over its staged writes (views
over its views), but sends nothing of it before this one is durable and kept: a crash meets
the two as it would meet two batches one after the other.

Writing state first (as a plain table write does) inverts this: a replay that meets state
whose events were lost would say "duplicate" where the lost event said "triggered".

An input that fails half-way is dead-lettered and its partial writes undone, the batch's
kept: the batch's views share a :class:`Journal` of the writes of the input in progress.
(Not a view of its own per input, merged into the batch's when it succeeds: creating and
merging six views, and an engine over them, for every input cost more than the journal.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

_DELETED: Any = object()
_UNWRITTEN: Any = object()  # a journal entry's previous value: the key had no write


class Journal:
    """The writes of the input in progress, across the views sharing it, in order: each
    with the view's write it replaced, so that they can be undone."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[StagedMapping, str, Any]] = []

    def start(self) -> None:
        """A new input: what the last one wrote is no longer undoable."""
        self.entries = []

    def undo(self) -> None:
        """Take back the writes since :meth:`start`, newest first."""
        for view, key, previous in reversed(self.entries):
            if previous is _UNWRITTEN:
                del view.writes[key]
            else:
                view.writes[key] = previous
        self.entries = []


class StagedMapping(MutableMapping[str, Any]):
    """A mapping over `base` that keeps its writes (and deletions) to itself."""

    __slots__ = ("base", "journal", "writes")

    def __init__(self, base: Mapping[str, Any], journal: Journal | None = None) -> None:
        self.base = base
        self.writes: dict[str, Any] = {}
        self.journal = journal

    def __getitem__(self, key: str) -> Any:
        writes = self.writes
        if key in writes:
            value = writes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        # Without raising KeyError through every level on a miss (most reads of new
        # alerts miss): the engine reads by get() on its hot path.
        view = self
        while True:
            writes = view.writes
            if key in writes:
                value = writes[key]
                return default if value is _DELETED else value
            base = view.base
            if not isinstance(base, StagedMapping):
                # not base.get(): a Mapping's get() raises and catches KeyError on a miss
                return base[key] if key in base else default  # noqa: SIM401
            view = base

    def __contains__(self, key: object) -> bool:
        writes = self.writes
        if key in writes:
            return writes[key] is not _DELETED  # type: ignore[index]
        return key in self.base

    def __setitem__(self, key: str, value: Any) -> None:
        writes = self.writes
        journal = self.journal
        if journal is not None:
            journal.entries.append((self, key, writes.get(key, _UNWRITTEN)))
        writes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        for key in self.base:
            if key not in self.writes:
                yield key
        for key, value in self.writes.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def staged(self) -> Iterator[tuple[str, Any, bool]]:
        """(key, value, deleted) for every write, in the order first written."""
        for key, value in self.writes.items():
            deleted = value is _DELETED
            yield key, (None if deleted else value), deleted
