"""How every bench reports: JSON on stdout, and the same JSON in a file with --out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")


def report(result: Any, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
