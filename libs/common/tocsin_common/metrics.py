"""Prometheus metrics: the registry every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

MESSAGES_CONSUMED = Counter(
    "tocsin_kafka_messages_consumed_total", "Kafka records processed", ["service", "topic"]
)
MESSAGES_PRODUCED = Counter(
    "tocsin_kafka_messages_produced_total", "Kafka records produced", ["service", "topic"]
)
DEAD_LETTERS = Counter(
    "tocsin_dead_letters_total",
    "Records sent to a dead-letter topic",
    ["service", "topic", "reason"],
)
CONSUMER_BATCHES = Counter(
    "tocsin_consumer_batches_total",
    "Batches a ConsumerLoop processed (one poll's records, one producer flush each)",
    ["service"],
)
PROCESSING_SECONDS = Histogram(
    "tocsin_processing_seconds", "Time to process one record", ["service", "topic"]
)


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics on its own port (a daemon thread of prometheus_client)."""
    start_http_server(port, addr=host)
