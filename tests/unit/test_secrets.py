"""Secrets are read from NAME or NAME_FILE; placeholders and short values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from tocsin_common.secrets import SecretError, generate_secret, read_secret


def test_reads_the_variable() -> None:
    value = generate_secret()
    assert read_secret("TOCSIN_X", {"TOCSIN_X": value}) == value


def test_reads_the_file_without_its_trailing_newline(tmp_path: Path) -> None:
    value = generate_secret()
    path = tmp_path / "x"
    path.write_text(value + "\n")
    assert read_secret("TOCSIN_X", {"TOCSIN_X_FILE": str(path)}) == value


@pytest.mark.parametrize(
    "value, problem",
    [
        ("change-me", "placeholder"),
        ("CHANGE_ME_PLEASE", "placeholder"),
        ("please-changeme-0000000000000000000000000", "placeholder"),
        ("replace-me-service-secret-000000000000000", "placeholder"),
        ("dev-only-link-secret-00000000000000000000000", "placeholder"),
        ("short", "at least 32"),
    ],
)
def test_refuses_placeholders_and_short_values(value: str, problem: str) -> None:
    with pytest.raises(SecretError, match=problem) as e:
        read_secret("TOCSIN_X", {"TOCSIN_X": value})
    assert "TOCSIN_X" in str(e.value)


def test_missing_is_an_error_only_when_required() -> None:
    with pytest.raises(SecretError, match="TOCSIN_X: required"):
        read_secret("TOCSIN_X", {})
    assert read_secret("TOCSIN_X", {}, required=False) is None


def test_both_forms_at_once_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="both set"):
        read_secret("TOCSIN_X", {"TOCSIN_X": generate_secret(), "TOCSIN_X_FILE": "/x"})


def test_unreadable_file_is_named() -> None:
    with pytest.raises(SecretError, match="TOCSIN_X_FILE=/nonexistent"):
        read_secret("TOCSIN_X", {"TOCSIN_X_FILE": "/nonexistent"})
