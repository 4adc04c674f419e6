"""notification entry point: wires settings -> adapters -> domain, then serves."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from aiohttp import web
from tocsin.v1 import (
    incident_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
    oncall_service_pb2_grpc,
)
from tocsin_common.auth.access import access_control
from tocsin_common.auth.service_credentials import SERVICE_SECRET_ENV
from tocsin_common.clock import Clock, SystemClock
from tocsin_common.config import ConfigStore
from tocsin_common.gc_tuning import freeze_startup_heap
from tocsin_common.grpcserver import GrpcServer, client_channel, open_channel
from tocsin_common.kafka import EventProducer, ensure_pipeline_topics, wait_for_kafka
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.redis_durability import require_durable_redis
from tocsin_common.redisclient import blocking_redis_client
from tocsin_common.runtime import bootstrap, run_service, until_stopped
from tocsin_common.secrets import SecretError, read_secret
from tocsin_common.settings import Settings
from tocsin_common.statuspage.store import RedisSubscriptions
from tocsin_common.statuspage.subscriptions import link_key
from tocsin_common.timeline import DEFAULT_WATCH_BACKLOG
from tocsin_common.topics import (
    NOTIFICATION_GROUP,
    NOTIFICATIONS_DEADLETTER,
    NOTIFICATIONS_REQUESTS,
)
from tocsin_common.tracing import spans_exported

from tocsin_notification.approvals import ApprovalStore
from tocsin_notification.automation import AutomationRunner
from tocsin_notification.breaker import BreakerRegistry
from tocsin_notification.bundling import BundlePolicy
from tocsin_notification.consumer import ConcurrentConsumer
from tocsin_notification.contacts import ContactDirectory, GrpcContacts
from tocsin_notification.delivery import Deliverer
from tocsin_notification.grpc_api import NotificationServicer
from tocsin_notification.http_api import (
    LinkApprovalSender,
    LinkCommandSender,
    LinkHandler,
    make_app,
)
from tocsin_notification.idempotency import IdempotencyStore
from tocsin_notification.links import KeyRing, LinkSigner, key_ring_from_env
from tocsin_notification.pipeline import Pipeline
from tocsin_notification.pipeline.bundle_stage import BundleStage
from tocsin_notification.pipeline.idempotency_stage import IdempotencyStage
from tocsin_notification.pipeline.ratelimit_stage import RateLimitStage
from tocsin_notification.pipeline.record_stage import RecordStage
from tocsin_notification.pipeline.render_stage import RenderStage
from tocsin_notification.pipeline.retry_stage import RetryStage
from tocsin_notification.pipeline.send_stage import SendStage
from tocsin_notification.providers import Provider, build, discover
from tocsin_notification.providers.webhook import require_signing_secret
from tocsin_notification.ratelimit import SlidingWindowLimit
from tocsin_notification.ratelimit_store import RedisRateLimitLog
from tocsin_notification.redis_batch import CommandBatcher
from tocsin_notification.render import Renderer
from tocsin_notification.subscribers import SubscriberDelivery
from tocsin_notification.tuning import Tuning

SERVICE = "notification"

log = logging.getLogger("tocsin.notification")


def api_public_url() -> str:
    """Where the status page and its subscription links are: the api's public URL."""
    return os.environ.get("TOCSIN_API_PUBLIC_URL", "").strip() or "http://127.0.0.1:8082"


def link_keys(keys_env: str, secret_env: str) -> KeyRing:
    """The link key ring from the environment; without one the service does not start
    (it never invents a key: links must outlive a restart and agree across replicas)."""
    try:
        ring = key_ring_from_env(keys_env, secret_env)
    except SecretError as e:
        log.error("cannot sign links: %s", e)
        raise SystemExit(f"notification: {e}") from None
    log.info("link keys: signing with %s; verifying %s", ring.current.kid, ", ".join(ring.kids))
    return ring


def public_url(settings: Settings) -> str:
    """Where links point: TOCSIN_PUBLIC_URL, else this process's own HTTP address."""
    if os.environ.get("TOCSIN_PUBLIC_URL"):
        return settings.public_url
    return f"http://{settings.http_host}:{settings.http_port}"


def build_pipeline(
    *,
    batcher: CommandBatcher,
    producer: EventProducer,
    oncall: oncall_service_pb2_grpc.OnCallServiceStub,
    providers: dict[str, Provider],
    signer: LinkSigner,
    public: str,
    tuning: Tuning,
    clock: Clock,
    credential: str | None,
    console: str = "",
    spans: bool = True,
    watch_backlog: Callable[[], int] = lambda: DEFAULT_WATCH_BACKLOG,
) -> Pipeline:
    limit = SlidingWindowLimit(tuning.rate_limit, tuning.rate_window_s)
    policy = BundlePolicy(limit, tuning.bundle_window_s)
    # The sends per person and contact method are kept in Redis: a restart or a rebalance
    # keeps the limit.
    shared = RedisRateLimitLog(batcher, limit)
    return Pipeline(
        idempotency=IdempotencyStage(IdempotencyStore(batcher)),
        ratelimit=RateLimitStage(policy, shared),
        bundle=BundleStage(policy, clock, shared),
        render=RenderStage(Renderer(), signer, public, clock, console),
        send=SendStage(
            BreakerRegistry(
                clock,
                failure_threshold=tuning.breaker_threshold,
                reset_timeout_s=tuning.breaker_reset_s,
            ),
            tuning.attempt_timeout_s,
            tuning.max_per_endpoint,
        ),
        retry=RetryStage(tuning.retry, clock),
        record=RecordStage(producer, batcher, clock, spans=spans, watch_backlog=watch_backlog),
        contacts=contact_directory(GrpcContacts(oncall, credential=credential), tuning),
        providers=providers,
        clock=clock,
    )


def contact_directory(contacts: GrpcContacts, tuning: Tuning) -> ContactDirectory:
    return ContactDirectory(
        contacts.one,
        tuning.contact_ttl_s,
        max_concurrent=tuning.max_lookups,
        lookup_many=contacts.many if tuning.contact_batch > 1 else None,
        max_batch=tuning.contact_batch,
    )


async def serve(stop: asyncio.Event) -> None:
    settings = bootstrap(SERVICE)
    # Without an exporter the no-op tracer provider is installed (building the spans of
    # every page cost a fifth of its CPU): records then skip their PRODUCER span too.
    spans = spans_exported()
    config = ConfigStore(settings.config_path)
    config.install_sighup()
    access = access_control(settings, config)
    notification_settings = config.current.notification
    links_settings = notification_settings.links
    # First: a missing or weak key stops the start before anything connects.
    signer = LinkSigner(
        link_keys(links_settings.signing_keys_env, links_settings.signing_secret_env),
        links_settings.ttl,
    )
    # Before anything starts: a signed webhook without its secret is a start-up error.
    try:
        webhook_secret = require_signing_secret(config.current)
    except SecretError as e:
        raise SystemExit(f"notification cannot start: {e}") from None
    clock = SystemClock()
    # Blocking pool: a burst queues for a connection instead of failing. The pages' own
    # commands go through one CommandBatcher, so they need few connections.
    redis = blocking_redis_client(settings.redis, max_connections=128, timeout=30)
    await require_durable_redis(
        redis, SERVICE, "Notification's idempotency marks (never pages twice)", os.environ
    )
    security = settings.kafka_security
    await wait_for_kafka(settings.kafka_bootstrap, security=security)
    await ensure_pipeline_topics(settings)
    producer = EventProducer(settings.kafka_bootstrap, SERVICE, security=security)
    await producer.start()
    channel = client_channel(settings.escalation_grpc, access.credential(), settings.tls)
    # Contact look-ups: a channel without interceptors (see GrpcContacts).
    contacts_channel = open_channel(settings.escalation_grpc, settings.tls)
    providers: dict[str, Provider] = {
        name: build(cls, notification_settings) for name, cls in discover().items()
    }
    log.info("providers: %s", ", ".join(sorted(providers)))
    pipeline = build_pipeline(
        batcher=CommandBatcher(redis),
        producer=producer,
        oncall=oncall_service_pb2_grpc.OnCallServiceStub(contacts_channel),
        providers=providers,
        signer=signer,
        public=public_url(settings),
        tuning=Tuning.from_env(),
        clock=clock,
        credential=access.credential(),
        console=settings.api_public_url,
        spans=spans,
        watch_backlog=lambda: config.current.limits.watch_backlog,
    )
    automation = AutomationRunner.from_settings(
        pipeline, clock, ApprovalStore(redis), producer, notification_settings
    )
    subscribers = SubscriberDelivery(
        pipeline,
        clock,
        producer,
        RedisSubscriptions(redis),
        lambda: config.current,
        link_key=link_key(read_secret(SERVICE_SECRET_ENV) or ""),
        api_url=api_public_url(),
        email=providers.get("email"),
        secret=webhook_secret.encode() if webhook_secret else None,
        destinations=DestinationPolicy(notification_settings.outgoing.allow),
    )
    deliverer = Deliverer(pipeline, automation, subscribers)
    consumer = ConcurrentConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=NOTIFICATION_GROUP.group_id,
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
        access,
        settings.tls,
    )
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        NotificationServicer(
            redis, deliverer, access, incident_service_pb2_grpc.IncidentServiceStub(channel)
        ),
        grpc_server.server,
    )
    links = LinkHandler(
        signer,
        incident_service_pb2_grpc.IncidentServiceStub(channel),
        LinkCommandSender(producer, access),
        clock,
        LinkApprovalSender(automation, access),
    )
    runner = web.AppRunner(make_app(links), access_log=None)
    await runner.setup()
    await web.TCPSite(
        runner,
        settings.http_host,
        settings.http_port,
        ssl_context=settings.tls.server_ssl_context(),
    ).start()
    await grpc_server.start()
    # Started: what the process holds now (modules, the config) stays; see gc_tuning.
    freeze_startup_heap()
    await consumer.start()
    tasks = [
        asyncio.create_task(consumer.run()),
        asyncio.create_task(config.watch(settings.config_reload_seconds)),
        asyncio.create_task(automation.run_expiry_sweep()),
    ]
    try:
        # Serving once this member joined its consumer group and can do its work.
        await consumer.joined.wait()
        await grpc_server.set_serving()
        await until_stopped(stop, tasks)
    finally:
        await grpc_server.stop()
        await consumer.stop()
        await runner.cleanup()
        for task in tasks:
            task.cancel()
        for provider in providers.values():
            await provider.close()
        await automation.close()
        await subscribers.close()
        await channel.close()
        await contacts_channel.close()
        await producer.stop()
        await access.stop()
        await redis.aclose()


def main() -> None:
    run_service(serve)


if __name__ == "__main__":
    main()
