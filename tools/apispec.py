"""The REST API's OpenAPI 3.1 document, generated from the code (services/api) and checked
in at docs/openapi.json, so clients and reviewers see the API without running it.

    python tools/apispec.py            # write docs/openapi.json  (make api-spec)
    python tools/apispec.py --check    # fail when it is stale    (make api-spec-check)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    from tocsin_api.app import create_app

    spec: dict[str, Any] = create_app(None).openapi()
    return spec


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/openapi.json is stale")
    parser.add_argument("--out", type=Path, default=SPEC)
    args = parser.parse_args()
    text = render(document())
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            sys.exit(
                f"{args.out.relative_to(ROOT)} is stale against services/api: run `make api-spec` "
                "and commit it"
            )
        print(f"{args.out.relative_to(ROOT)} is up to date")
        return
    args.out.write_text(text)
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
