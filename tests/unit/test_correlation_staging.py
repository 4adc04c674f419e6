"""Staged table writes (correlation/staging.py): reads see the batch, the table sees nothing
until the worker keeps the batch; a failed input's writes are dropped."""

from __future__ import annotations

import pytest
from tocsin_correlation.staging import StagedMapping


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


def test_an_input_view_merges_into_the_batch_only_when_kept() -> None:
    table = {"alert": "old"}
    batch = StagedMapping(table)

    failed = batch.child()
    failed["alert"] = "half-written"
    failed["incident"] = "half-written"
    # the failed input's view is simply dropped
    kept = batch.child()
    assert kept["alert"] == "old" and "incident" not in kept
    kept["alert"] = "new"
    del kept["alert"]
    kept["group"] = "g"
    kept.merge_into_parent()

    assert "alert" not in batch and batch["group"] == "g"
    assert sorted(batch.staged()) == [("alert", None, True), ("group", "g", False)]
    assert table == {"alert": "old"}


def test_only_a_child_merges() -> None:
    with pytest.raises(TypeError):
        StagedMapping({}).merge_into_parent()
