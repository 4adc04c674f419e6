"""Staged table writes: what a batch of inputs changed, kept aside until its output is durable.

The worker runs the engine over a batch of inputs against :class:`StagedMapping` views of its
tables. Reads see the table plus what the batch wrote; writes stay in the view. Only after
every incident event of the batch is acknowledged by Kafka are the writes applied to the
tables (and so to their changelogs). The order is what makes a crash safe:

- killed before the events are durable: nothing of the batch reached the changelogs, the
  inputs' offsets were not committed, and the replay computes the same events again;
- killed after: the events are out; a replay may meet the batch's state (all or some of
  it) and compute something else, but nothing it should have said is missing downstream.

Writing state first (as a plain table write does) inverts this: a replay that meets state
whose events were lost would say "duplicate" where the lost event said "triggered".

Each input gets its own view over the batch's (:meth:`StagedMapping.child`): an input that
fails half-way is dead-lettered and its partial writes dropped, the batch's kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

_DELETED: Any = object()


class StagedMapping(MutableMapping[str, Any]):
    """A mapping over `base` that keeps its writes (and deletions) to itself."""

    __slots__ = ("base", "writes")

    def __init__(self, base: Mapping[str, Any]) -> None:
        self.base = base
        self.writes: dict[str, Any] = {}

    def child(self) -> StagedMapping:
        return StagedMapping(self)

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
        self.writes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.writes[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        for key in self.base:
            if key not in self.writes:
                yield key
        for key, value in self.writes.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def merge_into_parent(self) -> None:
        """Move this view's writes into the view it reads through (a StagedMapping)."""
        parent = self.base
        if not isinstance(parent, StagedMapping):
            raise TypeError("only a child view merges into its parent")
        parent.writes.update(self.writes)
        self.writes = {}

    def staged(self) -> Iterator[tuple[str, Any, bool]]:
        """(key, value, deleted) for every write, in the order first written."""
        for key, value in self.writes.items():
            deleted = value is _DELETED
            yield key, (None if deleted else value), deleted
