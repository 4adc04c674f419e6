"""alert-ingest entry point: wires settings -> adapters -> domain, then serves.

With ``TOCSIN_INGEST_WORKERS`` > 1 this process (worker 0) also starts, watches and stops
the other workers (see workers.py); they run this same module with ``--worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web
from tocsin.v1 import (
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
)
from tocsin_common.auth.access import access_control
from tocsin_common.clock import SystemClock
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer
from tocsin_common.kafka import ensure_pipeline_topics, wait_for_kafka
from tocsin_common.logs import setup_logging
from tocsin_common.metrics import serve_metrics
from tocsin_common.redisclient import redis_client
from tocsin_common.runtime import run_service
from tocsin_common.settings import Settings
from tocsin_common.tracing import setup_tracing

from tocsin_ingest import workers
from tocsin_ingest.grpc_api import IngestServicer
from tocsin_ingest.heartbeat_api import HeartbeatServicer
from tocsin_ingest.heartbeats import HeartbeatMonitors
from tocsin_ingest.http_api import IngestHttpApi, runner_options
from tocsin_ingest.publisher import AlertPublisher, IngestProducer
from tocsin_ingest.raw_consumer import RawConsumer
from tocsin_ingest.redis_state import RedisHeartbeatStore, RedisPingSecrets, RedisRateLimiter

SERVICE = "alert-ingest"
READY_WITHIN_S = 120.0  # how long worker 0 waits for the others to listen
log = logging.getLogger("tocsin.ingest")


def bootstrap(argv: list[str]) -> tuple[Settings, workers.WorkerRole, bool]:
    """tocsin_common.runtime.bootstrap, plus this process's worker role and whether it
    exports spans (see tocsin_common.tracing.setup_tracing)."""
    settings = Settings.from_env(SERVICE)
    role = workers.role_from_argv(argv, workers.worker_count(settings.ingest_workers))
    setup_logging(SERVICE, settings.log_level)
    traced = setup_tracing(SERVICE)
    serve_metrics(role.metrics_port(settings.metrics_port))
    return settings, role, traced


async def serve(stop: asyncio.Event) -> None:
    settings, role, traced = bootstrap(sys.argv[1:])
    consume_raw = settings.ingest_consume_raw
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    if role.parent_fd is not None:
        parent_fd = role.parent_fd

        def parent_gone() -> None:  # worker 0 holds the writing end: end of file, it is gone
            loop.remove_reader(parent_fd)
            stop.set()

        loop.add_reader(parent_fd, parent_gone)
    config = ConfigStore(settings.config_path)
    redis = redis_client(settings.redis)
    await redis.ping()  # fail fast with a clear error when Redis is not there
    await wait_for_kafka(settings.kafka_bootstrap, security=settings.kafka_security)
    if role.primary:
        await ensure_pipeline_topics(settings)
    producer = IngestProducer(settings.kafka_bootstrap, SERVICE, traced=traced)
    await producer.start()
    publisher = AlertPublisher(producer)
    limiter = RedisRateLimiter(redis, clock)
    heartbeat_store = RedisHeartbeatStore(redis)
    ping_secrets = RedisPingSecrets(redis)
    heartbeats = HeartbeatMonitors(
        lambda: config.current,
        heartbeat_store,
        publisher.publish_all,
        clock,
        check_every=settings.heartbeat_check_seconds,
    )
    raw_loop = RawConsumer(
        bootstrap=settings.kafka_bootstrap,
        service=SERVICE,
        config=config,
        publisher=publisher,
        producer=producer,
        clock=clock,
        traced=traced,
    )
    read_timeout = settings.ingest_read_timeout_seconds
    api = IngestHttpApi(config, publisher, limiter, heartbeats, clock, ping_secrets, read_timeout)
    runner = web.AppRunner(api.app(traced=traced), access_log=None, **runner_options(read_timeout))
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.http_host,
        settings.http_port,
        backlog=1024,
        reuse_port=role.count > 1,
        ssl_context=settings.tls.server_ssl_context(),
    )
    await site.start()
    tasks = [asyncio.create_task(config.watch(settings.config_reload_seconds))]
    grpc_server: GrpcServer | None = None
    pool: WorkerPool | None = None
    if role.primary:
        ingest_name = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
        heartbeat_name = heartbeat_service_pb2.DESCRIPTOR.services_by_name[
            "HeartbeatService"
        ].full_name
        # IngestService authenticates each event by its integration (routing) key, as the
        # HTTP endpoints do; any other method (HeartbeatService) needs a bearer credential.
        access = access_control(settings, config, open_methods=[f"/{ingest_name}/"])
        grpc_server = GrpcServer(
            settings.grpc_host,
            settings.grpc_port,
            [ingest_name, heartbeat_name],
            access,
            settings.tls,
        )
        ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(
            IngestServicer(config, publisher, limiter, clock), grpc_server.server
        )
        heartbeat_service_pb2_grpc.add_HeartbeatServiceServicer_to_server(
            HeartbeatServicer(
                config, access, heartbeat_store, ping_secrets, clock, settings.ingest_public_url
            ),
            grpc_server.server,
        )
        tasks.append(asyncio.create_task(heartbeats.run(stop)))
        pool = WorkerPool(role, stop)
        await pool.start()

        def reload_all() -> None:  # SIGHUP: reload here and in every worker
            config.reload()
            if pool is not None:
                pool.signal(signal.SIGHUP)

        loop.add_signal_handler(signal.SIGHUP, reload_all)
    else:
        config.install_sighup()
        if role.ready_fd is not None:
            os.write(role.ready_fd, b"1")  # listening: worker 0 may report SERVING
            os.close(role.ready_fd)
    if consume_raw:
        await raw_loop.start()
        tasks.append(asyncio.create_task(raw_loop.run()))
    if pool is not None:
        await pool.wait_listening()  # before gRPC answers health checks at all
    if grpc_server is not None:
        await grpc_server.start()
        await grpc_server.set_serving()
    try:
        await stop.wait()
    finally:
        if pool is not None:
            await pool.stop()
        for task in tasks:
            task.cancel()
        if consume_raw:
            with contextlib.suppress(Exception):
                await raw_loop.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if grpc_server is not None:
            await grpc_server.stop()
            await grpc_server.access.stop()
        await runner.cleanup()
        await producer.stop()
        await redis.aclose()


class WorkerPool:
    """The other workers, run by worker 0: started after it listens, restarted when one
    dies, stopped (SIGTERM, then SIGKILL after 20 s) when it stops."""

    def __init__(self, role: workers.WorkerRole, stop: asyncio.Event) -> None:
        self._role = role
        self._stop = stop
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._read_fd, self._write_fd = os.pipe() if role.count > 1 else (-1, -1)
        self._ready_read, self._ready_write = os.pipe() if role.count > 1 else (-1, -1)

    async def start(self) -> None:
        for index in self._role.others():
            await self._spawn(index)
            self._watchers.append(asyncio.create_task(self._watch(index)))

    async def wait_listening(self) -> None:
        """Until every worker started listening (each writes one byte), or 120 s."""
        expected = len(self._role.others())
        if not expected:
            return
        loop = asyncio.get_running_loop()
        got = 0
        deadline = loop.time() + READY_WITHIN_S
        readable = asyncio.Event()
        loop.add_reader(self._ready_read, readable.set)
        try:
            while got < expected and not self._stop.is_set():
                readable.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(readable.wait(), max(0.0, deadline - loop.time()))
                if not readable.is_set():
                    log.error("ingest workers not listening in time", extra={"ready": got})
                    return
                got += len(os.read(self._ready_read, expected))
        finally:
            loop.remove_reader(self._ready_read)

    async def _spawn(self, index: int) -> None:
        self._procs[index] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tocsin_ingest",
            *workers.worker_argv(index, self._read_fd, self._ready_write),
            pass_fds=(self._read_fd, self._ready_write),
        )

    async def _watch(self, index: int) -> None:
        while not self._stop.is_set():
            code = await self._procs[index].wait()
            if self._stop.is_set():
                return
            log.error("ingest worker exited; restarting it", extra={"worker": index, "code": code})
            await asyncio.sleep(1.0)
            if not self._stop.is_set():
                await self._spawn(index)

    def signal(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        self.signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for fd in (self._write_fd, self._read_fd, self._ready_read, self._ready_write):
            if fd >= 0:
                os.close(fd)


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
