"""escalation entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

import asyncio
import os

from tocsin.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    incident_service_pb2,
    incident_service_pb2_grpc,
    oncall_service_pb2,
    oncall_service_pb2_grpc,
)
from tocsin_common.auth.access import access_control
from tocsin_common.auth.service import AuthServicer
from tocsin_common.clock import SystemClock
from tocsin_common.config import ConfigStore
from tocsin_common.gc_tuning import freeze_startup_heap
from tocsin_common.grpcserver import GrpcServer
from tocsin_common.kafka import ConsumerLoop, EventProducer, ensure_pipeline_topics, wait_for_kafka
from tocsin_common.redis_durability import require_durable_redis
from tocsin_common.redisclient import redis_client
from tocsin_common.runtime import bootstrap, run_service, until_stopped
from tocsin_common.topics import ESCALATION_GROUP, INCIDENTS_DEADLETTER, INCIDENTS_EVENTS

from tocsin_escalation.escalator import Escalator
from tocsin_escalation.grpc_api import IncidentServicer, OnCallServicer
from tocsin_escalation.projection import IncidentProjection, retention_of
from tocsin_escalation.stores import EscalationStateStore, OverrideStore
from tocsin_escalation.timers import RedisTimerStore, TimerLoop

SERVICE = "escalation"


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    access = access_control(settings, config)
    redis = redis_client(settings.redis)
    await require_durable_redis(
        redis, SERVICE, "Escalation's timers (fire once, never lost) and state", os.environ
    )
    security = settings.kafka_security
    await wait_for_kafka(settings.kafka_bootstrap, security=security)
    await ensure_pipeline_topics(settings)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE, security=security)
    await producer.start()
    projection = IncidentProjection(redis, lambda: retention_of(config.current.limits))
    clock = SystemClock()
    timer_store = RedisTimerStore(redis)
    overrides = OverrideStore(redis)
    escalator = Escalator(
        config,
        producer,
        redis,
        projection,
        timer_store,
        EscalationStateStore(redis),
        overrides,
        clock,
    )
    timer_loop = TimerLoop(timer_store, clock, escalator.fire)
    consumer = ConsumerLoop(
        bootstrap=settings.kafka_bootstrap,
        group_id=ESCALATION_GROUP.group_id,
        topic=INCIDENTS_EVENTS,
        service=SERVICE,
        handler=escalator.handle,
        producer=producer,
        dead_letter_topic=INCIDENTS_DEADLETTER,
        on_durable=escalator.write_batch,
        on_abandoned=escalator.drop_batch,
        security=security,
    )
    grpc_server = GrpcServer(
        settings.grpc_host,
        settings.grpc_port,
        [
            incident_service_pb2.DESCRIPTOR.services_by_name["IncidentService"].full_name,
            oncall_service_pb2.DESCRIPTOR.services_by_name["OnCallService"].full_name,
            auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
        ],
        access,
        settings.tls,
    )
    incident_service_pb2_grpc.add_IncidentServiceServicer_to_server(
        IncidentServicer(projection, producer, config, access), grpc_server.server
    )
    oncall_service_pb2_grpc.add_OnCallServiceServicer_to_server(
        OnCallServicer(config, overrides, access), grpc_server.server
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(access), grpc_server.server
    )
    await grpc_server.start()
    # Started: what the process holds now (modules, the config) stays; see gc_tuning.
    freeze_startup_heap()
    await consumer.start()
    tasks = [
        asyncio.create_task(consumer.run()),
        asyncio.create_task(config.watch(settings.config_reload_seconds)),
        asyncio.create_task(timer_loop.run()),
    ]
    try:
        # Serving once this member joined its consumer group and can do its work.
        await consumer.joined.wait()
        await grpc_server.set_serving()
        await until_stopped(stop, tasks)
    finally:
        timer_loop.stop()
        await grpc_server.stop()
        await consumer.stop()
        for task in tasks:
            task.cancel()
        await producer.stop()
        await access.stop()
        await redis.aclose()


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
