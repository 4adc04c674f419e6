"""Bootstrap access: ``python -m tocsin_common.auth bootstrap --out FILE``.

Creates an API token for the built-in ``tocsin-admin`` principal (a global admin that is no
person) in the Redis of ``TOCSIN_REDIS_URL``, writes it to FILE (mode 0600) and prints it
once. With that token an operator creates people's and tools' tokens over AuthService, then
revokes it. When FILE already holds a live token, nothing is created (``make up`` runs this
every time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tocsin_common.auth.directory import BOOTSTRAP_ADMIN
from tocsin_common.auth.policy import PrincipalKind, Role
from tocsin_common.auth.tokens import TokenStore
from tocsin_common.config.durations import parse_duration
from tocsin_common.redisclient import redis_client
from tocsin_common.transport import RedisConnection


async def bootstrap(
    redis_connection: RedisConnection, out: Path, ttl: timedelta, existing: str
) -> tuple[str, bool]:
    """The admin token (``existing`` while it is live) and whether it is new."""
    redis = redis_client(redis_connection)
    try:
        store = TokenStore(redis)
        now = datetime.now(UTC)
        if existing and await store.verify(existing, now) is not None:
            return existing, False
        token, _ = await store.create(
            subject_id=BOOTSTRAP_ADMIN,
            subject_kind=PrincipalKind.SERVICE_ACCOUNT,
            name="bootstrap admin",
            scope=Role.ADMIN,
            ttl=ttl,
            created_by=BOOTSTRAP_ADMIN,
            now=now,
        )
    finally:
        await redis.aclose()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tocsin_common.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="create the bootstrap admin token")
    boot.add_argument("--out", type=Path, required=True, help="file to write the token to")
    boot.add_argument("--ttl", default="30d", help="how long the token lives (default 30d)")
    boot.add_argument(
        "--redis-url",
        default="",
        help="default: TOCSIN_REDIS_URL, with the TOCSIN_REDIS_* TLS/ACL settings",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.redis_url:
        env["TOCSIN_REDIS_URL"] = args.redis_url
    if not env.get("TOCSIN_REDIS_URL"):
        parser.error("--redis-url or TOCSIN_REDIS_URL is required")
    connection = RedisConnection.from_env(env)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as e:
        parser.error(f"--ttl: {e}")
    existing = args.out.read_text().strip() if args.out.exists() else ""
    token, new = asyncio.run(bootstrap(connection, args.out, ttl, existing))
    if new:
        print(f"bootstrap admin token (shown once; also in {args.out}):\n  {token}")
    else:
        print(f"bootstrap admin token: still valid, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
