"""OpenTelemetry tracing shared by every service.

One alert yields one trace from the ingest request to the delivered page: W3C trace
context is injected into Kafka message headers by every producer and extracted by every
consumer, and carried in gRPC metadata by the interceptors below. The exporter is OTLP,
configured by the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_TRACES_EXPORTER=otlp|console|none, OTEL_SERVICE_NAME, OTEL_BSP_* ...).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

KafkaHeaders = Sequence[tuple[str, bytes]]

_provider: TracerProvider | None = None

EXPORTERS = ("otlp", "console")  # the exporters setup_tracing installs


def spans_exported(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment configures an exporter that spans would reach
    (OTEL_TRACES_EXPORTER otlp or console, otlp by default, and OTEL_SDK_DISABLED unset)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = env.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    return any(name.strip() in EXPORTERS for name in names.split(","))


def setup_tracing(service_name: str) -> bool:
    """Install the global tracer provider for this process (once); whether spans are
    exported.

    With no exporter (``OTEL_TRACES_EXPORTER=none``, ``OTEL_SDK_DISABLED=true``) every span
    would be thrown away unseen, yet building one costs more than most of the work it
    measures: the no-op provider is installed instead. It opens nothing and hands the
    parent's context through unchanged, so a ``traceparent`` that came in still goes out
    on every Kafka record and gRPC call: the services after this one continue the trace.
    """
    global _provider
    if _provider is not None:
        return True
    if not spans_exported(os.environ):
        trace.set_tracer_provider(trace.NoOpTracerProvider())
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or f"tocsin-{service_name}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    for exporter_name in (e.strip() for e in exporters.split(",")):
        if exporter_name == "otlp":
            # Imported here: the gRPC exporter pulls in a lot, and `none` needs none of it.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter_name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Flush finished spans; call on shutdown so the last spans are not lost."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# --- Kafka headers -------------------------------------------------------------------


class _HeaderListSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode("utf-8")))


class _HeaderGetter(Getter[KafkaHeaders]):
    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        values = [_to_str(v) for k, v in carrier if k.lower() == key.lower()]
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [k for k, _ in carrier]


def _to_str(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def kafka_headers(extra: Iterable[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
    """Headers for a Kafka record: the current trace context plus any extra ones."""
    headers: list[tuple[str, bytes]] = list(extra)
    propagate.inject(headers, setter=_HeaderListSetter())
    return headers


def context_from_kafka_headers(headers: KafkaHeaders | dict[str, bytes] | None) -> Context:
    """The trace context a producer put in a record's headers (empty when none)."""
    if headers is None:
        return Context()
    if isinstance(headers, dict):
        headers = list(headers.items())
    return propagate.extract(headers, getter=_HeaderGetter())


def consume_span(
    tracer_: trace.Tracer, topic: str, headers: KafkaHeaders | dict[str, bytes] | None, **attrs: Any
) -> Any:
    """A CONSUMER span for processing one record, child of the producer's span.

    Use as `with consume_span(t, topic, record.headers): ...`.
    """
    return tracer_.start_as_current_span(
        f"{topic} process",
        context=context_from_kafka_headers(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            **attrs,
        },
    )


def record_span(tracer_: trace.Tracer, record: Any) -> Any:
    """`consume_span` for a consumed Kafka record (aiokafka's ConsumerRecord): its topic,
    its headers' trace context, its partition and offset."""
    return consume_span(
        tracer_,
        record.topic,
        record.headers,
        **{"messaging.kafka.partition": record.partition, "messaging.kafka.offset": record.offset},
    )


def produce_span(tracer_: trace.Tracer, topic: str, **attrs: Any) -> Any:
    """A PRODUCER span for sending one record; inject headers inside it."""
    return tracer_.start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            **attrs,
        },
    )


def forwarded_kafka_headers(
    headers: KafkaHeaders | dict[str, bytes] | None,
) -> list[tuple[str, bytes]]:
    """Headers for a record produced while processing a consumed one without a span of
    its own (spans not exported): the consumed record's trace context, carried on
    unchanged, as a no-op tracer would. Empty when the record had none."""
    carrier: list[tuple[str, bytes]] = []
    if headers:
        propagate.inject(
            carrier, context=context_from_kafka_headers(headers), setter=_HeaderListSetter()
        )
    return carrier


def record_error(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)))


# --- gRPC interceptors ---------------------------------------------------------------


class _MetadataGetter(Getter[Sequence[tuple[str, str | bytes]]]):
    def get(self, carrier: Sequence[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [_to_str(v) for k, v in carrier if k.lower() == key.lower()]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, str | bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _MetadataSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


class TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Opens a SERVER span per call, child of the caller's span from the metadata."""

    def __init__(self) -> None:
        self._tracer = tracer("tocsin.grpc.server")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = tuple(handler_call_details.invocation_metadata or ())
        tracer_ = self._tracer

        def span(ctx: Context) -> Any:
            return tracer_.start_as_current_span(
                method.lstrip("/"),
                context=ctx,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.method": method},
            )

        def extracted() -> Context:
            return propagate.extract(metadata, getter=_MetadataGetter())

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with span(extracted()) as s:
                    try:
                        return await inner_uu(request, context)
                    except Exception as e:
                        record_error(s, e)
                        raise

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                with span(extracted()) as s:
                    try:
                        return await inner_su(request_iterator, context)
                    except Exception as e:
                        record_error(s, e)
                        raise

            return grpc.stream_unary_rpc_method_handler(
                stream_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                with span(extracted()):
                    async for item in inner_us(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Opens a CLIENT span per unary call and puts its context in the call's metadata."""

    def __init__(self) -> None:
        self._tracer = tracer("tocsin.grpc.client")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        with self._tracer.start_as_current_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": method},
        ) as s:
            metadata: list[tuple[str, str]] = list(client_call_details.metadata or ())
            propagate.inject(metadata, setter=_MetadataSetter())
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                grpc.aio.Metadata(*metadata),
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            try:
                call = await continuation(details, request)
                await call  # the span covers the whole call, not only its start
                return call
            except Exception as e:
                record_error(s, e)
                raise


def attach(ctx: Context) -> object:
    """Make ctx current (returns the token for `detach`)."""
    return otel_context.attach(ctx)


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


# --- HTTP (aiohttp server) -----------------------------------------------------------


# Path parameters that are credentials (a heartbeat's ping secret, an integration key in a
# webhook URL): spans record the path with these replaced, never the credential.
SECRET_PATH_PARAMS = ("secret", "key")
REDACTED = "REDACTED"


def redacted_path(request: Any) -> str:
    """``request.path`` with the values of SECRET_PATH_PARAMS segments replaced."""
    path: str = request.path
    secrets = [v for k, v in request.match_info.items() if k in SECRET_PATH_PARAMS and v]
    if not secrets:
        return path
    segments = path.split("/")
    return "/".join(REDACTED if seg in secrets else seg for seg in segments)


def aiohttp_tracing_middleware(service: str) -> Any:
    """An aiohttp middleware opening a SERVER span per request, continuing the caller's
    trace when it sent a `traceparent` header."""
    from aiohttp import web

    tracer_ = tracer(f"tocsin.{service}.http")

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        ctx = propagate.extract(dict(request.headers))
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        with tracer_.start_as_current_span(
            name,
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": redacted_path(request)},
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                span.set_attribute("http.response.status_code", e.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    return middleware


def inject_http_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing HTTP headers (returns the same dict)."""
    propagate.inject(headers)
    return headers
