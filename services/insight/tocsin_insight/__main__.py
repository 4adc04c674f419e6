"""insight entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

from tocsin_common.runtime import run_service

from tocsin_insight.service import serve


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
