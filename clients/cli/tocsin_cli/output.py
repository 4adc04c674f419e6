"""Rendering what a command got: a readable Rich table for people, JSON or YAML for scripts.

Pure: every function returns the text it would print (the commands print it), so the unit
tests check tables, JSON and YAML without a terminal. JSON and YAML carry the api's objects
unchanged (every field, not only the table's columns); a listing is a JSON array of them.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


_FRACTION = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+(?=Z$|[+-]\d\d:\d\d$)")

Getter = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to get its cell from a row (a key, a dotted path
    ``a.b``, or a function). ``candidates`` are other keys tried in order when the first is
    absent (the api may name a field as PagerDuty does, or as Tocsin's protos do)."""

    header: str
    key: str | Getter
    candidates: tuple[str, ...] = ()
    wrap: bool = True  # False for ids: a wrapped id cannot be copied

    def cell(self, row: Mapping[str, Any]) -> Any:
        if callable(self.key):
            return self.key(row)
        for key in (self.key, *self.candidates):
            value = lookup(row, key)
            if value is not None and value != "":
                return value
        return None


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """``row[a][b]`` for ``"a.b"``; None when any step is missing."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def text_of(value: Any) -> str:
    """A cell's text: ``-`` for nothing, lists joined with commas, mappings as k=v."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={text_of(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, str):
        # A time to the second is what a person reads: 2026-12-04T19:20:01Z.
        return _FRACTION.sub(r"\1", value)
    return str(value)


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    # No colour codes in the returned text: it is printed by a console that adds its own.
    console = Console(file=buffer, width=width, color_system=None, highlight=False)
    return console, buffer


def _trimmed(text: str) -> str:
    # Rich pads every line to the table's width; trailing spaces only get in the way.
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def render_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    width: int = 120,
) -> str:
    """Rows as a table with a header line; ``empty`` when there are none."""
    if not rows:
        return f"{empty}\n"
    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold"
    )
    for column in columns:
        table.add_column(column.header, overflow="fold", no_wrap=not column.wrap)
    for row in rows:
        table.add_row(*(text_of(column.cell(row)) for column in columns))
    console, buffer = _console(width)
    console.print(table)
    return _trimmed(buffer.getvalue())


def render_fields(
    obj: Mapping[str, Any], fields: Iterable[Column] | None = None, *, width: int = 120
) -> str:
    """One object as two columns, field and value (``fields``, or every key it has)."""
    pairs = [(c.header, c.cell(obj)) for c in fields] if fields is not None else list(obj.items())
    table = Table(show_header=False, show_edge=False, pad_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in pairs:
        table.add_row(str(name), text_of(value))
    console, buffer = _console(width)
    console.print(table)
    return _trimmed(buffer.getvalue())


def render_data(data: Any, fmt: OutputFormat) -> str:
    """``data`` as JSON (indented, parseable) or YAML (block style), ending with a newline."""
    if fmt is OutputFormat.json:
        return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt is OutputFormat.yaml:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValueError(f"render_data renders json or yaml, not {fmt.value}")


def render(
    data: Any,
    fmt: OutputFormat,
    columns: Sequence[Column],
    *,
    rows: Sequence[Mapping[str, Any]] | None = None,
    title: str | None = None,
    empty: str = "nothing to show",
    width: int = 120,
) -> str:
    """A listing in ``fmt``: the table of ``rows`` (``data`` itself when it is the list), or
    ``data`` as JSON/YAML."""
    if fmt is OutputFormat.table:
        table_rows = rows if rows is not None else data
        return render_table(table_rows, columns, title=title, empty=empty, width=width)
    return render_data(data, fmt)


def json_line(data: Any) -> str:
    """One compact JSON document on one line (``tocsin tail -o json``: NDJSON)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
