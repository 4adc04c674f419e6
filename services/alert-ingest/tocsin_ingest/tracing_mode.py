"""Whether this process exports spans, and the tracer provider that follows (edge: the
decision is pure, installing the provider is the one side effect).

With an exporter (``OTEL_TRACES_EXPORTER`` otlp or console, the default being otlp)
alert-ingest opens its spans as every service does. With none (``OTEL_TRACES_EXPORTER=none``
or ``OTEL_SDK_DISABLED=true``) every span it would open is thrown away unseen, yet building
one costs more than parsing the event: then the no-op provider is installed instead, which
opens nothing and hands the caller's context through unchanged. A ``traceparent`` the
sender gave still reaches the Kafka record headers, so the services after ingest continue
the sender's trace; a request without one starts no trace here.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from tocsin_common.tracing import setup_tracing

EXPORTERS = ("otlp", "console")  # those tocsin_common.tracing.setup_tracing installs


def spans_exported(env: Mapping[str, str]) -> bool:
    """True when the environment configures an exporter that spans would reach."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = env.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    return any(name.strip() in EXPORTERS for name in names.split(","))


def setup(service: str, env: Mapping[str, str]) -> bool:
    """Install this process's tracer provider; returns whether spans are exported."""
    if spans_exported(env):
        setup_tracing(service)
        return True
    trace.set_tracer_provider(trace.NoOpTracerProvider())
    return False
