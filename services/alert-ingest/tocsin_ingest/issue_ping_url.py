"""Issue heartbeat ping URLs from the command line (HeartbeatService.IssuePingUrl).

    python -m tocsin_ingest.issue_ping_url nightly-backup            # prints the URL, once
    python -m tocsin_ingest.issue_ping_url --overlap 1h nightly-backup
    python -m tocsin_ingest.issue_ping_url --all --out-dir DIR --keep-existing

The credential is the token in ``$TOCSIN_TOKEN`` or in the file ``--token-file`` (a manager
of the heartbeat's team, or an admin); alert-ingest's gRPC address is ``--target`` (default
``$TOCSIN_INGEST_GRPC`` or 127.0.0.1:50051), TLS as the TOCSIN_TLS_* variables say.
With ``--out-dir`` each URL goes to ``DIR/<heartbeat id>.url`` (mode 0600) instead of the
terminal; ``--keep-existing`` leaves a heartbeat whose file exists and whose URL is still
issued alone (what `make up` runs, so a restart keeps the URLs a newcomer wired up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc
from tocsin.v1 import heartbeat_service_pb2 as pb
from tocsin.v1 import heartbeat_service_pb2_grpc as pb_grpc
from tocsin_common.auth.access import bearer_interceptors
from tocsin_common.config.durations import parse_duration
from tocsin_common.grpcserver import open_channel
from tocsin_common.transport import TlsSettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tocsin_ingest.issue_ping_url",
        description="Issue heartbeat ping URLs (each is shown once).",
    )
    parser.add_argument("heartbeat_ids", nargs="*", metavar="HEARTBEAT_ID")
    parser.add_argument("--all", action="store_true", help="every heartbeat the token may see")
    parser.add_argument(
        "--target", default=os.environ.get("TOCSIN_INGEST_GRPC", "127.0.0.1:50051")
    )
    parser.add_argument("--token-file", type=Path, help="default: $TOCSIN_TOKEN")
    parser.add_argument(
        "--overlap", default="0s", help="how long the previous URL keeps working (e.g. 1h)"
    )
    parser.add_argument("--out-dir", type=Path, help="write DIR/<id>.url (0600), print nothing")
    parser.add_argument("--keep-existing", action="store_true", help="with --out-dir")
    args = parser.parse_args(argv)
    if bool(args.heartbeat_ids) == args.all:
        parser.error("name heartbeat ids, or --all")
    if args.keep_existing and args.out_dir is None:
        parser.error("--keep-existing needs --out-dir")
    return args


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        return str(args.token_file.read_text().strip())
    token = os.environ.get("TOCSIN_TOKEN", "").strip()
    if not token:
        sys.exit("no credential: set TOCSIN_TOKEN or pass --token-file (docs/security.md)")
    return token


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT


async def run(args: argparse.Namespace) -> int:
    try:
        overlap = parse_duration(args.overlap)
    except ValueError as bad:
        sys.exit(f"--overlap: {bad}")
    channel = open_channel(
        args.target,
        TlsSettings.from_env(os.environ),
        interceptors=bearer_interceptors(_token(args)),
    )
    async with channel:
        stub = pb_grpc.HeartbeatServiceStub(channel)
        issued = {}
        if args.all or args.keep_existing:
            listed = await stub.ListHeartbeats(pb.ListHeartbeatsRequest())
            issued = {h.heartbeat_id: h.ping_url_issued for h in listed.heartbeats}
        ids = sorted(issued) if args.all else args.heartbeat_ids
        for heartbeat_id in ids:
            target = args.out_dir / f"{heartbeat_id}.url" if args.out_dir else None
            kept = args.keep_existing and target is not None and target.exists()
            if kept and issued.get(heartbeat_id):
                continue
            request = pb.IssuePingUrlRequest(heartbeat_id=heartbeat_id)
            if overlap:
                request.previous_valid_for.FromTimedelta(overlap)
            try:
                reply = await stub.IssuePingUrl(request)
            except grpc.aio.AioRpcError as refused:
                if args.all and refused.code() == grpc.StatusCode.PERMISSION_DENIED:
                    continue  # --all: the ones this token may issue
                sys.exit(f"{heartbeat_id}: {refused.code().name}: {refused.details()}")
            if target is not None:
                write_private(target, reply.ping_url)
            else:
                print(f"{heartbeat_id}: {reply.ping_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
