"""alert-ingest entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

import asyncio

from aiohttp import web
from tocsin.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer
from tocsin_common.kafka import EventProducer, ensure_topics, wait_for_kafka
from tocsin_common.runtime import bootstrap, run_service

from tocsin_ingest.grpc_api import IngestServicer
from tocsin_ingest.http_api import IngestHttpApi
from tocsin_ingest.publisher import AlertPublisher

SERVICE = "alert-ingest"


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    await wait_for_kafka(settings.kafka_bootstrap)
    await ensure_topics(settings.kafka_bootstrap)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE)
    await producer.start()
    publisher = AlertPublisher(producer)

    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name],
    )
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(config, publisher), grpc_server.server
    )
    runner = web.AppRunner(IngestHttpApi(config, publisher).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024)
    await site.start()
    await grpc_server.start()
    await grpc_server.set_serving()
    watcher = asyncio.create_task(config.watch(settings.config_reload_seconds))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await grpc_server.stop()
        await runner.cleanup()
        await producer.stop()


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
