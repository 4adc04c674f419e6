"""api entry point: settings -> adapters -> the ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tocsin_common.auth.access import access_control
from tocsin_common.auth.service_credentials import SERVICE_SECRET_ENV
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer
from tocsin_common.runtime import bootstrap
from tocsin_common.secrets import read_secret
from tocsin_common.statuspage.store import RedisSubscriptions
from tocsin_common.statuspage.subscriptions import link_key
from tocsin_common.topics import NOTIFICATIONS_REQUESTS
from tocsin_common.tracing import shutdown_tracing

from tocsin_api.app import create_app
from tocsin_api.backends import Backends
from tocsin_api.deps import ApiState
from tocsin_api.feeds import FeedStore
from tocsin_api.ratelimit import RateLimiter
from tocsin_api.settings import ApiSettings
from tocsin_api.status.overrides import RedisOverrides

SERVICE = "api"

log = logging.getLogger("tocsin.api")


def console_secret() -> str:
    """The console's cookie secret: TOCSIN_CONSOLE_SECRET (or its _FILE), else the service
    secret every replica already shares (the cookie key is derived from it, never it)."""
    return (
        read_secret("TOCSIN_CONSOLE_SECRET", required=False)
        or read_secret(SERVICE_SECRET_ENV)
        or ""
    )


def build() -> tuple[FastAPI, uvicorn.Config]:
    settings = bootstrap(SERVICE)
    api_settings = ApiSettings.from_env(http_port=settings.http_port or 8082)
    config = ConfigStore(settings.config_path)
    # The service secret is required; verified API tokens are kept a few seconds (security.md)
    access = access_control(settings, config, token_cache_seconds=api_settings.token_cache_seconds)
    backends_box: list[Backends] = []
    limiter_box: list[RateLimiter] = []

    def backends() -> Backends:
        return backends_box[0]

    def limiter() -> RateLimiter:
        if not limiter_box:  # on the serving loop, with the shared client
            limiter_box.append(RateLimiter(access.redis(), api_settings.rate_limit_per_minute))
        return limiter_box[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config.install_sighup()
        backends_box.append(
            Backends.connect(
                escalation=settings.escalation_grpc,
                correlation=api_settings.correlation_grpc,
                notification=api_settings.notification_grpc,
                ingest=api_settings.ingest_grpc,
                insight=api_settings.insight_grpc,
                tls=settings.tls,
            )
        )
        health = health_pb2_grpc.HealthStub(backends().channels[0])

        async def ready() -> None:
            await access.redis().ping()
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("escalation is not serving")

        async def send_notice(key: str, request: Message) -> None:
            # The audit log's producer (acks=all): durable before the api answers.
            producer = await access.audit.producer()
            await producer.send(NOTIFICATIONS_REQUESTS, key, request)

        state = ApiState(
            config=config,
            authenticator=access.authenticator,
            backends=backends_box[0],
            settings=api_settings,
            feeds=lambda: FeedStore(access.redis()),
            status_overrides=lambda: RedisOverrides(access.redis()),
            status_subscriptions=lambda: RedisSubscriptions(access.redis()),
            subscription_key=link_key(read_secret(SERVICE_SECRET_ENV) or ""),
            send_notice=send_notice,
            limiter=limiter,
            audit=access.audit,
            service_credential=access.credential,
            ready=ready,
            console_secret=console_secret(),
        )
        app.state.api = state
        # grpc.health.v1 only, like every service's port: Kubernetes' and compose's probes.
        health_server = GrpcServer(settings.grpc_host, settings.grpc_port, [], access, settings.tls)
        await health_server.start()
        await health_server.set_serving(True)
        watcher = asyncio.create_task(config.watch(settings.config_reload_seconds))
        log.info("api serving on %s:%s", settings.http_host, settings.http_port)
        try:
            yield
        finally:
            watcher.cancel()
            await health_server.stop()
            await backends().close()
            await access.stop()

    app = create_app(None, lifespan=lifespan, max_body_bytes=api_settings.max_body_bytes)
    tls = settings.tls
    server_config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port or 8082,
        loop="uvloop" if os.environ.get("TOCSIN_EVENT_LOOP", "uvloop") == "uvloop" else "asyncio",
        http="httptools",  # a C parser: less CPU per request than h11 (pure Python)
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        ssl_certfile=tls.cert_file if tls.serves_tls else None,
        ssl_keyfile=tls.key_file if tls.serves_tls else None,
    )
    return app, server_config


def main() -> None:
    _, server_config = build()
    try:
        uvicorn.Server(server_config).run()
    finally:
        with contextlib.suppress(Exception):
            shutdown_tracing()


if __name__ == "__main__":
    main()
