"""correlation entry point: a faust worker, plus the gRPC server in the same event loop."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust
from tocsin.v1 import silence_service_pb2
from tocsin_common import gc_tuning
from tocsin_common.auth.access import access_control
from tocsin_common.config import ConfigStore
from tocsin_common.faustapp import worker_event_loop
from tocsin_common.grpcserver import ThreadedGrpcServer
from tocsin_common.kafka import ensure_pipeline_topics, wait_for_kafka
from tocsin_common.logs import setup_logging
from tocsin_common.runtime import bootstrap
from tocsin_common.topics import CO_PARTITIONED
from tocsin_common.tracing import shutdown_tracing

from tocsin_correlation.silence_api import registrar
from tocsin_correlation.worker import CorrelationWorker

SERVICE = "correlation"
log = logging.getLogger("tocsin.correlation")


GC_FULL_EVERY_S = float(os.environ.get("TOCSIN_CORRELATION_GC_FULL_EVERY_S", "60"))


def main() -> None:
    settings = bootstrap(SERVICE)
    config = ConfigStore(settings.config_path)
    access = access_control(settings, config)
    worker = CorrelationWorker(settings, config)
    app = worker.app
    grpc_server = ThreadedGrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [silence_service_pb2.DESCRIPTOR.services_by_name["SilenceService"].full_name],
        access,
        register=registrar(settings.redis, config, access),
        tls=settings.tls,
    )
    recovered = asyncio.Event()
    background: list[asyncio.Task[None]] = []  # referenced, so they are not collected

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_recovered(sender: Any, *args: Any, **kwargs: Any) -> None:
        recovered.set()

    # The tables grow with every alert: full collections on a timer, not on growth.
    gc_tuning.collect_fully_on_timer()

    @app.task  # type: ignore[untyped-decorator]
    async def collect_garbage() -> None:
        await gc_tuning.collect_periodically(GC_FULL_EVERY_S)

    @app.task  # type: ignore[untyped-decorator]
    async def start_serving() -> None:
        # Faust reconfigured logging while starting: put the JSON logs back.
        setup_logging(SERVICE, settings.log_level)
        config.install_sighup()
        grpc_server.start()
        background.append(asyncio.create_task(config.watch(settings.config_reload_seconds)))

        async def serve_when_recovered() -> None:
            # Serving once the tables have recovered from their changelogs and partitions
            # are assigned: from then on every new alert meets current state. Not awaited
            # here: faust finishes starting (and so recovers) only after this task returns.
            await recovered.wait()
            grpc_server.set_serving()

        background.append(asyncio.create_task(serve_when_recovered()))

    async def prepare_topics() -> None:
        security = settings.kafka_security
        await wait_for_kafka(settings.kafka_bootstrap, security=security)
        # Its tables have TOCSIN_KAFKA_PARTITIONS partitions: its inputs and changelogs
        # must have as many, or it refuses to start (PartitionMismatch).
        await ensure_pipeline_topics(settings, strict=CO_PARTITIONED)
        changelogs = worker.changelog_topics()
        await ensure_pipeline_topics(settings, changelogs, strict=changelogs)

    loop = worker_event_loop(os.environ)
    loop.run_until_complete(prepare_topics())
    try:
        faust.Worker(
            # redirect_stdouts off: faust would send stderr (where our JSON logs go) back
            # through logging, and the worker's logs were lost.
            app,
            loglevel=settings.log_level,
            quiet=True,
            loop=loop,
            redirect_stdouts=False,
        ).execute_from_commandline()
    finally:
        grpc_server.stop()
        shutdown_tracing()


if __name__ == "__main__":
    main()
