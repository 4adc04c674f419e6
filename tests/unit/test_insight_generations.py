"""Which fact-table generations go once another serves (schema.retired, pure)."""

from __future__ import annotations

import pytest
from tocsin_insight.schema import retired


def test_older_generations_go_but_the_one_that_served_before() -> None:
    names = ["g1", "g2", "g3", "g4"]
    # g3 serves, g2 served before it and stays; g1 goes; g4 is being filled and stays.
    assert retired("g3", "g2", names) == ["g1"]
    # A replay killed midway (g2, never served) goes; g1, which served before g3, stays.
    assert retired("g3", "g1", names) == ["g2"]
    # Unknown previous (a database from before it was recorded): the newest older one stays.
    assert retired("g3", None, names) == ["g1"]
    # Numbers, not text: g10 is newer than g9.
    assert retired("g10", "g9", ["g8", "g9", "g10", "g11"]) == ["g8"]
    assert retired("g1", None, ["g1"]) == []
    # Served back to an older one: the newer previous is not older, nothing else goes.
    assert retired("g2", "g3", ["g2", "g3"]) == []


def test_bad_names_are_named() -> None:
    with pytest.raises(ValueError, match="generation 'x2'"):
        retired("g2", None, ["x2"])
