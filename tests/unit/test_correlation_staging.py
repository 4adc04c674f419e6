"""Staged table writes (correlation/staging.py): reads see the batch, the table sees nothing
until the worker keeps the batch; a failed input's writes are dropped."""

from __future__ import annotations

import pytest
from tocsin_correlation.staging import Journal, StagedMapping


def test_reads_see_staged_writes_and_the_base_stays_untouched() -> None:
    table = {"a": 1, "b": 2}
    batch = StagedMapping(table)
    batch["a"] = 10
    batch["c"] = 3
    del batch["b"]

    assert batch["a"] == 10 and batch.get("c") == 3
    assert "b" not in batch and batch.get("b") is None
    with pytest.raises(KeyError):
        batch["b"]
    assert sorted(batch) == ["a", "c"] and len(batch) == 2
    assert table == {"a": 1, "b": 2}


def test_deleting_a_missing_key_raises_and_pop_defaults() -> None:
    batch = StagedMapping({})
    with pytest.raises(KeyError):
        del batch["nope"]
    assert batch.pop("nope", "default") == "default"


def test_a_rewritten_deleted_key_is_back() -> None:
    batch = StagedMapping({"a": 1})
    del batch["a"]
    batch["a"] = 2
    assert batch["a"] == 2
    assert list(batch.staged()) == [("a", 2, False)]


def test_a_failed_inputs_writes_are_undone_and_the_batchs_kept() -> None:
    table = {"alert": "old"}
    journal = Journal()
    alerts = StagedMapping(table, journal)
    groups = StagedMapping({}, journal)

    journal.start()  # an input that succeeds
    alerts["kept"] = "k"
    groups["g"] = "kept group"

    journal.start()  # one that fails half-way, across two views
    alerts["alert"] = "half-written"
    alerts["alert"] = "rewritten"
    del alerts["kept"]
    groups["g"] = "overwritten"
    groups["new"] = "half-written"
    assert alerts["alert"] == "rewritten" and "kept" not in alerts
    journal.undo()

    assert alerts["alert"] == "old" and alerts["kept"] == "k"
    assert groups["g"] == "kept group" and "new" not in groups
    assert list(alerts.staged()) == [("kept", "k", False)]
    assert list(groups.staged()) == [("g", "kept group", False)]
    assert journal.entries == []
    assert table == {"alert": "old"}


def test_a_kept_input_is_no_longer_undoable() -> None:
    journal = Journal()
    view = StagedMapping({}, journal)
    journal.start()
    view["a"] = 1
    assert [(key, previous is not None) for _, key, previous in journal.entries] == [("a", True)]
    journal.start()  # the next input
    journal.undo()
    assert view["a"] == 1


def test_a_view_without_a_journal_keeps_no_entries() -> None:
    view = StagedMapping({})
    view["a"] = 1
    del view["a"]
    assert "a" not in view and view.journal is None
