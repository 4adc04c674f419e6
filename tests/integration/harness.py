"""The integration harness: Tocsin's five services as real processes against the real
Kafka and Redis that `make test` started, with peers that record what they receive.

- a recording HTTP peer: every page delivered to a webhook lands in `pages.requests`;
- a real OTLP/gRPC trace receiver: every span the services export lands in `traces.spans`.
Each service runs as `python -m <package>`, exactly as in production, with its own ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from tocsin_common.auth.access import bearer_interceptors
from tocsin_common.auth.directory import BOOTSTRAP_ADMIN
from tocsin_common.auth.policy import PrincipalKind, Role
from tocsin_common.auth.tokens import TokenStore
from tocsin_common.secrets import generate_secret

from tools.recorder import OtlpTraceSink, RecordingHttpPeer

ROOT = Path(__file__).resolve().parents[2]

# Variables that carry the link keys: the stack sets its own, whatever the shell has.
LINK_KEY_VARS = (
    "TOCSIN_LINK_KEYS",
    "TOCSIN_LINK_KEYS_FILE",
    "TOCSIN_LINK_SECRET",
    "TOCSIN_LINK_SECRET_FILE",
)

SERVICES = {
    "alert-ingest": "tocsin_ingest",
    "correlation": "tocsin_correlation",
    "escalation": "tocsin_escalation",
    "notification": "tocsin_notification",
    "api": "tocsin_api",
    "insight": "tocsin_insight",
}
HTTP_SERVICES = ("alert-ingest", "notification", "api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def infra_from_env() -> tuple[str, str]:
    """Kafka and Redis as `make test` exported them (and PostgreSQL, which insight reads
    from TOCSIN_POSTGRES_URL and its password file); a clear failure when run without."""
    bootstrap = os.environ.get("TOCSIN_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("TOCSIN_REDIS_URL")
    postgres_url = os.environ.get("TOCSIN_POSTGRES_URL")
    if not bootstrap or not redis_url or not postgres_url:
        raise RuntimeError(
            "integration tests need the real Kafka, Redis and PostgreSQL: run them with "
            "`make test`, which starts them and exports TOCSIN_KAFKA_BOOTSTRAP, "
            "TOCSIN_REDIS_URL and TOCSIN_POSTGRES_URL"
        )
    return bootstrap, redis_url


@dataclass
class ServiceProcess:
    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    grpc_port: int
    http_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # A graceful stop that hangs must not hang the suite: kill it.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        if self.name.startswith("api"):
            await self._wait_http_ready(timeout)
            return
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.3)
        raise TimeoutError(f"{self.name} not SERVING after {timeout}s:\n{self.log_tail()}")

    async def _wait_http_ready(self, timeout: float) -> None:
        """The api has no gRPC port: ready once GET /readyz answers 200."""
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    reply = await client.get(f"http://127.0.0.1:{self.http_port}/readyz")
                    if reply.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")


@dataclass
class Stack:
    """Five services, a webhook peer and a trace receiver, for one test session."""

    bootstrap: str
    redis_url: str
    workdir: Path
    config_text: str
    pages: RecordingHttpPeer = field(init=False)
    traces: OtlpTraceSink = field(init=False)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # overrides, e.g. for benches
    admin_token: str = ""  # a live token of the bootstrap admin, made by start()

    def __post_init__(self) -> None:
        self.pages = RecordingHttpPeer(free_port())
        self.traces = OtlpTraceSink(free_port())
        self.config_path = self.workdir / "tocsin.yaml"
        self.service_secret = generate_secret()
        # A fresh link secret per stack, handed over as a file (as a mounted Secret is).
        self.link_secret = generate_secret()
        self.link_secret_file = self.write_secret("link-secret", self.link_secret)
        # Where test_oidc.py starts its OpenID Connect provider ("{oidc}" in stack_config):
        # the services discover it lazily, on the first OIDC token, so it may start later.
        self.oidc_port = free_port()
        self.oidc_issuer = f"http://127.0.0.1:{self.oidc_port}"
        # The api's client secret at that provider, for the console's code exchange (the
        # provider takes any secret of a confidential client).
        self.oidc_client_secret = generate_secret()

        # Where a test starts its SMTP peer ("{smtp_port}" in stack_config: notification's
        # e-mail provider connects at send time, so the peer may start later).
        self.smtp_port = free_port()

        # Generated per session, handed over as a file (the *_FILE way a deployment does).
        self.webhook_secret = generate_secret()
        self.webhook_secret_file = self.write_secret("TOCSIN_WEBHOOK_SECRET", self.webhook_secret)

    def channel(self, service: str, token: str | None = None) -> grpc.aio.Channel:
        """A channel to ``service`` whose calls carry ``token`` (the admin's by default;
        "" for none)."""
        token = self.admin_token if token is None else token
        interceptors = bearer_interceptors(token) if token else []
        return grpc.aio.insecure_channel(self.grpc_target(service), interceptors=interceptors)

    async def token_for(
        self,
        subject: str,
        kind: PrincipalKind = PrincipalKind.USER,
        scope: Role = Role.ADMIN,
        ttl: timedelta = timedelta(hours=1),
    ) -> tuple[str, str]:
        """A new API token of ``subject`` written straight to the stack's Redis: (token, id)."""
        from redis.asyncio import Redis

        redis = Redis.from_url(self.redis_url)
        try:
            token, record = await TokenStore(redis).create(
                subject_id=subject,
                subject_kind=kind,
                name=f"integration test: {subject}",
                scope=scope,
                ttl=ttl,
                created_by="integration-harness",
                now=datetime.now(UTC),
            )
        finally:
            await redis.aclose()
        return token, record.token_id

    def write_secret(self, name: str, value: str) -> Path:
        path = self.workdir / "secrets" / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(value)
        path.chmod(0o600)
        return path

    @property
    def api_url(self) -> str:
        """The REST API's base, e.g. f"{stack.api_url}/api/v1/incidents"."""
        return f"http://127.0.0.1:{self.services['api'].http_port}"

    @property
    def ingest_url(self) -> str:
        port = self.services["alert-ingest"].http_port
        return f"http://127.0.0.1:{port}"

    def grpc_target(self, service: str) -> str:
        return f"127.0.0.1:{self.services[service].grpc_port}"

    async def start(self) -> None:
        await self.pages.start()
        await self.traces.start()
        self.config_path.write_text(
            self.config_text.replace("{peer}", f"http://127.0.0.1:{self.pages.port}")
            .replace("{oidc}", self.oidc_issuer)
            .replace("'{smtp_port}'", str(self.smtp_port))
        )
        ports = {name: (free_port(), free_port(), free_port()) for name in SERVICES}
        for name, module in SERVICES.items():
            grpc_port, metrics_port, http_port = ports[name]
            env = {
                # The stack's own secrets, whatever the caller's shell has.
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k not in LINK_KEY_VARS and k != "TOCSIN_WEBHOOK_SECRET"
                },
                "TOCSIN_KAFKA_BOOTSTRAP": self.bootstrap,
                "TOCSIN_REDIS_URL": self.redis_url,
                "TOCSIN_CONFIG": str(self.config_path),
                "TOCSIN_GRPC_PORT": str(grpc_port),
                "TOCSIN_METRICS_PORT": str(metrics_port),
                "TOCSIN_HTTP_PORT": str(http_port),
                "TOCSIN_ESCALATION_GRPC": f"127.0.0.1:{ports['escalation'][0]}",
                "TOCSIN_CORRELATION_GRPC": f"127.0.0.1:{ports['correlation'][0]}",
                "TOCSIN_NOTIFICATION_GRPC": f"127.0.0.1:{ports['notification'][0]}",
                "TOCSIN_INGEST_GRPC": f"127.0.0.1:{ports['alert-ingest'][0]}",
                "TOCSIN_INSIGHT_GRPC": f"127.0.0.1:{ports['insight'][0]}",
                "TOCSIN_API_PUBLIC_URL": f"http://127.0.0.1:{ports['api'][2]}",
                # The suites share tokens: test_api_ratelimit.py runs replicas with a low one
                "TOCSIN_API_RATE_LIMIT_PER_MINUTE": "100000",
                "TOCSIN_DATA_DIR": str(self.workdir / "data" / name),
                "TOCSIN_CONFIG_RELOAD_SECONDS": "0.5",
                "TOCSIN_SERVICE_SECRET": self.service_secret,
                "TOCSIN_OIDC_CLIENT_SECRET": self.oidc_client_secret,
                "TOCSIN_WEBHOOK_SECRET_FILE": str(self.webhook_secret_file),
                "TOCSIN_LINK_SECRET_FILE": str(self.link_secret_file),
                "TOCSIN_PUBLIC_URL": f"http://127.0.0.1:{ports['notification'][2]}",
                "OTEL_SERVICE_NAME": f"tocsin-{name}",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.traces.port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                **self.extra_env,
            }
            has_http = name in HTTP_SERVICES
            self.services[name] = ServiceProcess(
                name,
                module,
                env,
                self.workdir / f"{name}.log",
                grpc_port,
                http_port if has_http else None,
            )
        for service in self.services.values():
            service.start()
        try:
            self.admin_token, _ = await self.token_for(
                BOOTSTRAP_ADMIN, PrincipalKind.SERVICE_ACCOUNT
            )
            await asyncio.gather(*(s.wait_healthy() for s in self.services.values()))
        except BaseException:
            # The ones that did start would stay in the consumer groups and take partitions
            # from the next stack (a bench whose correlation refused to start left five).
            await self.stop()
            raise

    async def add_replica(
        self, name: str, env: dict[str, str] | None = None, suffix: str = "2"
    ) -> ServiceProcess:
        """Another process of service ``name``, as a scaled-out deployment runs it: the same
        config, consumer groups and peers, ports and data of its own (``env`` overrides),
        named ``<name>-<suffix>``. Stopped with the stack."""
        base = self.services[name]
        grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
        env = {
            **base.env,
            "TOCSIN_GRPC_PORT": str(grpc_port),
            "TOCSIN_METRICS_PORT": str(metrics_port),
            "TOCSIN_HTTP_PORT": str(http_port),
            "TOCSIN_DATA_DIR": base.env["TOCSIN_DATA_DIR"] + f"-{suffix}",
            **(env or {}),
        }
        replica = ServiceProcess(
            f"{name}-{suffix}",
            base.module,
            env,
            base.log_path.with_name(f"{name}-{suffix}.log"),
            grpc_port,
            http_port if base.http_port else None,
        )
        self.services[replica.name] = replica
        replica.start()
        await replica.wait_healthy()
        return replica

    def http_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].http_port}"

    async def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one service (SIGKILL by default, as a crash) and start it again, healthy."""
        service = self.services[name]
        service.kill(sig)
        service.start()
        await service.wait_healthy()

    async def stop(self) -> None:
        for service in self.services.values():
            service.kill(signal.SIGTERM)
        await self.pages.stop()
        await self.traces.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{s.log_tail(2500)}" for n, s in self.services.items())
