"""Process settings, read from the environment once at start.

Every service reads the same variables; each one has a default that works with `make up`.
Transport security (TLS, Kafka SSL/SASL, Redis ACL and TLS) is parsed by
tocsin_common.transport; with none of its variables set everything is plaintext, as on
loopback.
The OpenTelemetry exporter is configured by the standard OTEL_* variables, which the SDK
reads itself (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tocsin_common.topics import DEFAULT_PARTITIONS, MAX_PARTITIONS
from tocsin_common.transport import (
    KafkaSecurity,
    PostgresConnection,
    RedisConnection,
    TlsSettings,
)


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True)
class ServicePorts:
    grpc: int
    metrics: int
    http: int | None = None


# Default ports of each service on one machine (`make up`). Tests and deployments override
# them with TOCSIN_GRPC_PORT / TOCSIN_HTTP_PORT / TOCSIN_METRICS_PORT.
DEFAULT_PORTS: dict[str, ServicePorts] = {
    "alert-ingest": ServicePorts(grpc=50051, metrics=9101, http=8080),
    "correlation": ServicePorts(grpc=50052, metrics=9102),
    "escalation": ServicePorts(grpc=50053, metrics=9103),
    "notification": ServicePorts(grpc=50054, metrics=9104, http=8081),
    # The REST API: people call its HTTP port; its gRPC port serves grpc.health.v1 only.
    "api": ServicePorts(grpc=50055, metrics=9105, http=8082),
    "insight": ServicePorts(grpc=50056, metrics=9106),
}


@dataclass(frozen=True)
class Settings:
    service: str
    kafka_bootstrap: str
    redis_url: str
    config_path: str
    grpc_host: str
    grpc_port: int
    http_host: str
    http_port: int | None
    metrics_port: int
    escalation_grpc: str
    public_url: str
    data_dir: str
    log_level: str
    config_reload_seconds: float
    ingest_consume_raw: bool  # alert-ingest consumes alerts.raw
    heartbeat_check_seconds: float  # how often alert-ingest looks for missed heartbeats
    ingest_workers: int = 1  # alert-ingest HTTP worker processes sharing its port
    # partitions of the pipeline's topics when they are created (tocsin_common.topics)
    kafka_partitions: int = DEFAULT_PARTITIONS
    # alert-ingest HTTP: the most a request's headers, and then its body, may take to arrive
    ingest_read_timeout_seconds: float = 15.0
    # alert-ingest's HTTP base as monitored jobs reach it: heartbeat ping URLs start with it
    ingest_public_url: str = "http://127.0.0.1:8080"
    # the api's HTTP base as people reach it (TOCSIN_API_PUBLIC_URL): a reminder's link to
    # the incident in the console starts with it
    api_public_url: str = "http://127.0.0.1:8082"
    tls: TlsSettings = field(default_factory=TlsSettings)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    redis: RedisConnection = field(
        default_factory=lambda: RedisConnection("redis://127.0.0.1:6379/0")
    )
    # insight's read model; only insight connects (parsed for every service all the same,
    # so a bad TOCSIN_POSTGRES_* is reported at start wherever it is set)
    postgres: PostgresConnection = field(
        default_factory=lambda: PostgresConnection("postgresql://tocsin@127.0.0.1:5433/tocsin")
    )

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        if service not in DEFAULT_PORTS:
            raise SettingsError(
                f"unknown service {service!r}; expected one of {sorted(DEFAULT_PORTS)}"
            )
        ports = DEFAULT_PORTS[service]
        http_default = ports.http
        redis = RedisConnection.from_env(env)
        tls = TlsSettings.from_env(env)
        http_port = _int(env, "TOCSIN_HTTP_PORT", http_default) if http_default else None
        return cls(
            service=service,
            kafka_bootstrap=env.get("TOCSIN_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            redis_url=redis.url,
            config_path=env.get("TOCSIN_CONFIG", "config/tocsin.example.yaml"),
            grpc_host=env.get("TOCSIN_GRPC_HOST", "127.0.0.1"),
            grpc_port=_int(env, "TOCSIN_GRPC_PORT", ports.grpc),
            http_host=env.get("TOCSIN_HTTP_HOST", "127.0.0.1"),
            http_port=http_port,
            metrics_port=_int(env, "TOCSIN_METRICS_PORT", ports.metrics),
            escalation_grpc=env.get(
                "TOCSIN_ESCALATION_GRPC", f"127.0.0.1:{DEFAULT_PORTS['escalation'].grpc}"
            ),
            public_url=env.get(
                "TOCSIN_PUBLIC_URL", f"http://127.0.0.1:{DEFAULT_PORTS['notification'].http}"
            ),
            data_dir=env.get("TOCSIN_DATA_DIR", f"/tmp/tocsin-{service}"),
            log_level=env.get("TOCSIN_LOG_LEVEL", "INFO").upper(),
            config_reload_seconds=_float(env, "TOCSIN_CONFIG_RELOAD_SECONDS", 5.0),
            ingest_consume_raw=_flag(env, "TOCSIN_INGEST_CONSUME_RAW", True),
            heartbeat_check_seconds=_float(env, "TOCSIN_INGEST_HEARTBEAT_CHECK_SECONDS", 1.0),
            ingest_workers=_int(env, "TOCSIN_INGEST_WORKERS", 1),
            kafka_partitions=kafka_partitions(env),
            ingest_read_timeout_seconds=_float(env, "TOCSIN_INGEST_READ_TIMEOUT_SECONDS", 15.0),
            ingest_public_url=_base_url(
                env,
                "TOCSIN_INGEST_PUBLIC_URL",
                f"{'https' if tls.serves_tls else 'http'}://127.0.0.1:"
                f"{http_port or DEFAULT_PORTS['alert-ingest'].http}",
            ),
            api_public_url=_base_url(
                env, "TOCSIN_API_PUBLIC_URL", f"http://127.0.0.1:{DEFAULT_PORTS['api'].http}"
            ),
            tls=tls,
            kafka_security=KafkaSecurity.from_env(env),
            redis=redis,
            postgres=PostgresConnection.from_env(env),
        )


def kafka_partitions(env: Mapping[str, str] | None = None) -> int:
    """TOCSIN_KAFKA_PARTITIONS: the partitions of the pipeline's topics when they are
    created (every service, the CLI and the devstack read the same variable)."""
    env = os.environ if env is None else env
    value = _int(env, "TOCSIN_KAFKA_PARTITIONS", DEFAULT_PARTITIONS)
    if not 1 <= value <= MAX_PARTITIONS:
        raise SettingsError(
            f"TOCSIN_KAFKA_PARTITIONS={env['TOCSIN_KAFKA_PARTITIONS']!r}: expected a whole "
            f"number from 1 to {MAX_PARTITIONS}"
        )
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not 0 < value < 65536 and name.endswith("_PORT"):
        raise SettingsError(f"{name}={raw!r}: expected a port between 1 and 65535")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds") from None


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/"):
        raise SettingsError(f"{name}={raw!r}: expected an http:// or https:// URL")
    if "?" in rest or "#" in rest:
        raise SettingsError(f"{name}={raw!r}: expected a base URL without a query or fragment")
    return raw.rstrip("/")
