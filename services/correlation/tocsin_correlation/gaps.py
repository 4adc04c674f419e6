"""Offsets a partition jumps over: records the consumer skipped, or offsets where the
broker has no record a consumer can read.

A partition's offsets are not contiguous: a transaction's commit or abort marker takes an
offset no consumer is given, retention and ``kafka-delete-records`` remove records at the
head, compaction removes them anywhere. faust's consumer also drops records around
rebalances (worker.py). The two look alike in the stream — the next record's offset is
beyond the expected one — and are told apart by asking the broker: read from the expected
offset (a seek back, on a side consumer) and see where its first record is.

Pure decisions, no I/O: the worker does the reading.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """What to do with the record met at ``met`` when ``expected`` was due."""

    process: bool  # take the record met now
    reread_from: int | None = None  # seek back to this offset: records there were skipped
    accepted: int = 0  # offsets of the gap where the broker has no record (moved over)
    skipped: int = 0  # offsets of records the consumer skipped (read again)


def judge(expected: int | None, met: int, first_available: int | None) -> Verdict:
    """The guard's decision for a record at offset ``met``.

    ``expected``: the offset after the last record processed in this partition (None:
    nothing processed since the partition was assigned). ``first_available``: the offset
    of the first record the broker gives when read from ``expected`` (None: it gave none,
    or could not be asked).

    - ``met`` is the expected offset (or earlier, or nothing is expected): process it;
    - the broker's first record is ``met`` or beyond: it has nothing in between (markers,
      deleted or compacted records): the gap is legitimate, process ``met``;
    - the broker's first record is before ``met``: the records from there were skipped by
      the consumer: read them again from it (the offsets before it are a legitimate gap);
    - no answer: assume skipped, read again from ``expected`` (never lose a record).
    """
    if expected is None or met <= expected:
        return Verdict(process=True)
    if first_available is None or first_available <= expected:
        return Verdict(process=False, reread_from=expected, skipped=met - expected)
    if first_available >= met:
        return Verdict(process=True, accepted=met - expected)
    return Verdict(
        process=False,
        reread_from=first_available,
        accepted=first_available - expected,
        skipped=met - first_available,
    )


def reread_again_from(wanted: int, first_available: int | None) -> int:
    """Where to seek again when the record at ``wanted`` has not come after a seek back:
    ``wanted`` itself, unless the broker no longer has it (deleted by retention since):
    then its first record from there."""
    if first_available is None or first_available <= wanted:
        return wanted
    return first_available


@dataclass(frozen=True)
class KnownOffsets:
    """Offsets the broker was seen to have in one partition: every record from ``start``
    up to the last of ``offsets``, as one read from ``start`` returned them. Within that
    range the broker has no record at any other offset, so gaps inside it need no new
    read (a topic written in transactions has one per transaction)."""

    start: int
    offsets: Sequence[int]  # ascending

    def first_from(self, expected: int, met: int) -> int | None:
        """The first offset at or after ``expected`` the broker has, if this read covers
        ``expected`` up to ``met`` (else None: read again)."""
        offsets = self.offsets
        if not offsets or self.start > expected or offsets[-1] < met:
            return None
        return offsets[bisect_left(offsets, expected)]
