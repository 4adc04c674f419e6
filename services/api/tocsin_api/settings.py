"""The api's own process settings, read from the environment once at start (pure)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tocsin_common.settings import DEFAULT_PORTS, SettingsError


@dataclass(frozen=True)
class ApiSettings:
    correlation_grpc: str
    notification_grpc: str
    ingest_grpc: str
    # Where insight answers reports (GET /analytics/..., review drafts)
    insight_grpc: str = f"127.0.0.1:{DEFAULT_PORTS['insight'].grpc}"
    # The most a request body may hold (413 beyond)
    max_body_bytes: int = 64 * 1024
    # Requests per token per minute (429 with Retry-After beyond), counted in Redis
    rate_limit_per_minute: int = 600
    # The api's base URL as people reach it: calendar feed URLs start with it
    public_url: str = "http://127.0.0.1:8082"
    # How long a verified API token is kept (0: verified in Redis on every request; at most
    # 5 s: a revocation on another replica is honoured within this time)
    token_cache_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, http_port: int = 8082) -> ApiSettings:
        env = os.environ if env is None else env
        return cls(
            correlation_grpc=env.get(
                "TOCSIN_CORRELATION_GRPC", f"127.0.0.1:{DEFAULT_PORTS['correlation'].grpc}"
            ),
            notification_grpc=env.get(
                "TOCSIN_NOTIFICATION_GRPC", f"127.0.0.1:{DEFAULT_PORTS['notification'].grpc}"
            ),
            ingest_grpc=env.get(
                "TOCSIN_INGEST_GRPC", f"127.0.0.1:{DEFAULT_PORTS['alert-ingest'].grpc}"
            ),
            insight_grpc=env.get(
                "TOCSIN_INSIGHT_GRPC", f"127.0.0.1:{DEFAULT_PORTS['insight'].grpc}"
            ),
            max_body_bytes=_positive(env, "TOCSIN_API_MAX_BODY_BYTES", 64 * 1024),
            rate_limit_per_minute=_positive(env, "TOCSIN_API_RATE_LIMIT_PER_MINUTE", 600),
            public_url=_url(env, "TOCSIN_API_PUBLIC_URL", f"http://127.0.0.1:{http_port}"),
            token_cache_seconds=_seconds(env, "TOCSIN_API_TOKEN_CACHE_SECONDS", 5.0, 5.0),
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: expected a number above 0")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, most: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds") from None
    if not 0 <= value <= most:
        raise SettingsError(f"{name}={raw!r}: expected 0 to {most:g} seconds")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/"):
        raise SettingsError(f"{name}={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")
