"""The gRPC server every service runs: tracing interceptor, error mapping
(tocsin_common.grpc_errors) and grpc.health.v1 built in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tocsin_common.auth.access import AccessControl, bearer_interceptors
from tocsin_common.grpc_errors import ErrorMappingInterceptor
from tocsin_common.tracing import TracingClientInterceptor, TracingServerInterceptor
from tocsin_common.transport import TlsSettings

Registrar = Callable[[grpc.aio.Server], None]


class GrpcServer:
    """A gRPC aio server with health checking; services register their servicers on it.

    Every call but health and reflection (and ``access``'s open methods) is authenticated
    by ``access``'s interceptor, inside the call's SERVER span, so audit records carry the
    trace id."""

    def __init__(
        self,
        host: str,
        port: int,
        service_names: Iterable[str],
        access: AccessControl,
        tls: TlsSettings | None = None,
    ) -> None:
        """``tls``: serve TLS (and require client certificates with mTLS) when it has a
        certificate; plaintext otherwise (loopback, or behind a mesh)."""
        self.access = access
        self.server = grpc.aio.server(
            # Errors mapped innermost: an exception never reaches a client as UNKNOWN.
            interceptors=[
                TracingServerInterceptor(),
                access.interceptor(),
                ErrorMappingInterceptor(),
            ]
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names = list(service_names)
        self.address = f"{host}:{port}"
        self.port = add_port(self.server, self.address, tls)

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, serving: bool = True) -> None:
        """Report SERVING (overall and per service) once the service can do its work."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for name in self._service_names:
            await self.health.set(name, status)

    async def stop(self, grace: float = 2.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings | None) -> int:
    """Listen on ``address``: TLS when ``tls`` has a certificate, plaintext otherwise."""
    if tls is not None and tls.serves_tls:
        return int(server.add_secure_port(address, tls.server_credentials()))
    return int(server.add_insecure_port(address))


# A restarted service is dialled again within 2 s: gRPC's default back-off grows to 120 s,
# so a caller (the api answering 503 with Retry-After: 1) kept failing long after the
# service was back.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def open_channel(
    target: str,
    tls: TlsSettings | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A channel to ``target``: TLS (verifying the server against the CA, presenting this
    process's certificate with mTLS) when ``tls`` says so, plaintext otherwise."""
    if tls is not None and tls.dials_tls:
        return grpc.aio.secure_channel(
            target,
            tls.channel_credentials(),
            options=CHANNEL_OPTIONS,
            interceptors=list(interceptors),
        )
    return grpc.aio.insecure_channel(
        target, options=CHANNEL_OPTIONS, interceptors=list(interceptors)
    )


def client_channel(
    target: str, credential: str | None = None, tls: TlsSettings | None = None
) -> grpc.aio.Channel:
    """A channel to another Tocsin service, carrying the trace context in its metadata and,
    given one, a credential (a service's own: :meth:`AccessControl.credential`)."""
    interceptors: list[Any] = [TracingClientInterceptor()]
    if credential is not None:
        interceptors.extend(bearer_interceptors(credential))
    return open_channel(target, tls, interceptors=interceptors)


class ThreadedGrpcServer:
    """A GrpcServer on its own event loop in a daemon thread.

    For processes whose main loop is not a plain asyncio one: gRPC aio's server never
    finishes starting inside faust/mode's worker loop, so correlation runs it beside it.
    Servicers must then not touch the worker loop's objects directly.
    """

    def __init__(
        self,
        host: str,
        port: int,
        service_names: Iterable[str],
        access: AccessControl,
        register: Callable[[grpc.aio.Server], None] | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self._args = (host, port, list(service_names))
        self._access = access
        self._tls = tls
        self._register = register
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: GrpcServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> None:
        thread = threading.Thread(target=self._run, name="grpc-server", daemon=True)
        thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("gRPC server thread did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        host, port, names = self._args
        self._server = GrpcServer(host, port, names, self._access, self._tls)
        if self._register is not None:
            self._register(self._server.server)
        await self._server.start()

    def set_serving(self, serving: bool = True) -> None:
        assert self._loop is not None and self._server is not None
        asyncio.run_coroutine_threadsafe(self._server.set_serving(serving), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
