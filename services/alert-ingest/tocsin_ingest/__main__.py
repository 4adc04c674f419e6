"""alert-ingest entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from redis.asyncio import Redis
from tocsin.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common.clock import SystemClock
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer
from tocsin_common.kafka import ConsumerLoop, EventProducer, ensure_topics, wait_for_kafka
from tocsin_common.runtime import bootstrap, run_service
from tocsin_common.topics import ALERTS_DEADLETTER, ALERTS_RAW

from tocsin_ingest.grpc_api import IngestServicer
from tocsin_ingest.heartbeats import HeartbeatMonitors
from tocsin_ingest.http_api import IngestHttpApi
from tocsin_ingest.publisher import AlertPublisher
from tocsin_ingest.raw_consumer import GROUP_ID, RawRecordHandler
from tocsin_ingest.redis_state import RedisHeartbeatStore, RedisRateLimiter

SERVICE = "alert-ingest"


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    consume_raw = settings.ingest_consume_raw
    heartbeat_check = settings.heartbeat_check_seconds
    clock = SystemClock()
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    redis = Redis.from_url(settings.redis_url)
    await redis.ping()  # fail fast with a clear error when Redis is not there
    await wait_for_kafka(settings.kafka_bootstrap)
    await ensure_topics(settings.kafka_bootstrap)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE)
    await producer.start()
    publisher = AlertPublisher(producer)
    limiter = RedisRateLimiter(redis, clock)
    heartbeats = HeartbeatMonitors(
        lambda: config.current,
        RedisHeartbeatStore(redis),
        publisher.publish_all,
        clock,
        check_every=heartbeat_check,
    )
    raw_loop = ConsumerLoop(
        bootstrap=settings.kafka_bootstrap,
        group_id=GROUP_ID,
        topic=ALERTS_RAW,
        service=SERVICE,
        handler=RawRecordHandler(config, publisher, clock),
        producer=producer,
        dead_letter_topic=ALERTS_DEADLETTER,
    )

    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name],
    )
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(config, publisher, limiter, clock), grpc_server.server
    )
    api = IngestHttpApi(config, publisher, limiter, heartbeats, clock)
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024)
    await site.start()
    tasks = [
        asyncio.create_task(config.watch(settings.config_reload_seconds)),
        asyncio.create_task(heartbeats.run(stop)),
    ]
    if consume_raw:
        await raw_loop.start()
        tasks.append(asyncio.create_task(raw_loop.run()))
    await grpc_server.start()
    await grpc_server.set_serving()
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        if consume_raw:
            with contextlib.suppress(Exception):
                await raw_loop.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await grpc_server.stop()
        await runner.cleanup()
        await producer.stop()
        await redis.aclose()


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
