"""notification entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from tocsin.v1 import (
    notification_service_pb2,
    notification_service_pb2_grpc,
    oncall_service_pb2_grpc,
)
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer, client_channel
from tocsin_common.kafka import ConsumerLoop, EventProducer, ensure_topics, wait_for_kafka
from tocsin_common.runtime import bootstrap, run_service, until_stopped
from tocsin_common.topics import NOTIFICATIONS_DEADLETTER, NOTIFICATIONS_REQUESTS

from tocsin_notification.delivery import Deliverer
from tocsin_notification.grpc_api import NotificationServicer
from tocsin_notification.providers import Provider, discover

SERVICE = "notification"


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    redis = Redis.from_url(settings.redis_url)
    await wait_for_kafka(settings.kafka_bootstrap)
    await ensure_topics(settings.kafka_bootstrap)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE)
    await producer.start()
    channel = client_channel(settings.escalation_grpc)
    providers: dict[str, Provider] = {name: cls() for name, cls in discover().items()}
    deliverer = Deliverer(
        redis, producer, oncall_service_pb2_grpc.OnCallServiceStub(channel), providers
    )
    consumer = ConsumerLoop(
        bootstrap=settings.kafka_bootstrap,
        group_id="tocsin-notification",
        topic=NOTIFICATIONS_REQUESTS,
        service=SERVICE,
        handler=deliverer.handle,
        producer=producer,
        dead_letter_topic=NOTIFICATIONS_DEADLETTER,
    )
    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [
            notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
        ],
    )
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationServicer(redis, deliverer), grpc_server.server
    )
    await grpc_server.start()
    await consumer.start()
    tasks = [
        asyncio.create_task(consumer.run()),
        asyncio.create_task(config.watch(settings.config_reload_seconds)),
    ]
    try:
        # Serving once this member joined its consumer group and can do its work.
        await consumer.joined.wait()
        await grpc_server.set_serving()
        await until_stopped(stop, tasks)
    finally:
        await grpc_server.stop()
        await consumer.stop()
        for task in tasks:
            task.cancel()
        for provider in providers.values():
            await provider.close()
        await channel.close()
        await producer.stop()
        await redis.aclose()


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
