"""insight entry point.

python -m tocsin_insight            # serve: consume into facts, answer InsightService
python -m tocsin_insight replay     # fill a new generation from the topics' beginning,
                                    # then make it serve (make insight-replay)
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from tocsin_common.runtime import run_service

from tocsin_insight.service import replay, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tocsin_insight",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["serve", "replay"], default="serve")
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="replay: fill and complete the new generation but leave the current one serving",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        run_service(serve)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = asyncio.run(replay(serve_when_done=not args.no_serve))
    print(f"generation {name} complete{'' if args.no_serve else ' and serving'}")


if __name__ == "__main__":
    main()
