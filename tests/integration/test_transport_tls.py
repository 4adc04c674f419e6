"""TLS and mTLS on the real listeners: libs/common's GrpcServer and client_channel, the
container health check, and an aiohttp listener with the services' SSL context. Each
configured as a service is, from TOCSIN_TLS_* variables; certificates made by openssl."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tocsin_common import healthcheck
from tocsin_common.auth.access import AccessControl
from tocsin_common.config import ConfigStore
from tocsin_common.grpcserver import GrpcServer, client_channel
from tocsin_common.secrets import generate_secret
from tocsin_common.transport import RedisConnection, TlsSettings

from tests.pki import Issued, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"), "someone-elses-ca")


def tls_env(ca: Path | None = None, own: Issued | None = None, mtls: bool = False) -> TlsSettings:
    env = {}
    if ca is not None:
        env["TOCSIN_TLS_CA_FILE"] = str(ca)
    if own is not None:
        env["TOCSIN_TLS_CERT_FILE"] = str(own.cert)
        env["TOCSIN_TLS_KEY_FILE"] = str(own.key)
    if mtls:
        env["TOCSIN_TLS_CLIENT_AUTH"] = "require"
    return TlsSettings.from_env(env)


def no_access(tmp: Path) -> AccessControl:
    """Access control that is never asked: health, the only service here, is always open."""
    config = tmp / "tocsin.yaml"
    config.write_text("version: 1\n")
    return AccessControl(
        service="escalation",
        config=ConfigStore(config),
        redis=RedisConnection("redis://127.0.0.1:1/0"),
        kafka_bootstrap="127.0.0.1:1",
        service_secret=generate_secret().encode(),
    )


async def serving(server_tls: TlsSettings, tmp: Path) -> GrpcServer:
    server = GrpcServer("127.0.0.1", 0, ["tocsin.test.Nothing"], no_access(tmp), server_tls)
    await server.start()
    await server.set_serving()
    return server


async def health(port: int, client_tls: TlsSettings | None) -> str:
    """SERVING, or the status code of the failed call."""
    channel = client_channel(f"localhost:{port}", tls=client_tls)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    finally:
        await channel.close()


async def test_grpc_over_tls_verifies_the_server_and_refuses_plaintext(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    server = await serving(tls_env(pki.ca.cert, pki.issue("escalation")), tmp_path)
    try:
        assert await health(server.port, tls_env(pki.ca.cert)) == "SERVING"
        # Plaintext against a TLS port, and TLS trusting another CA: no call gets through.
        assert await health(server.port, None) == "UNAVAILABLE"
        assert await health(server.port, tls_env(other_pki.ca.cert)) == "UNAVAILABLE"
        # The container health check speaks TLS from the same variables.
        assert await asyncio.to_thread(healthcheck.check, server.port, tls=tls_env(pki.ca.cert))
        assert not await asyncio.to_thread(healthcheck.check, server.port, tls=None)
    finally:
        await server.stop(0)


async def test_grpc_mtls_requires_a_client_certificate_signed_by_the_ca(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    server = await serving(tls_env(pki.ca.cert, pki.issue("escalation-m"), mtls=True), tmp_path)
    try:
        # A client with the service's CA and a certificate of its own: served.
        caller = tls_env(pki.ca.cert, pki.issue("notification"), mtls=True)
        assert await health(server.port, caller) == "SERVING"
        # TLS without a client certificate: refused in the handshake.
        assert await health(server.port, tls_env(pki.ca.cert)) == "UNAVAILABLE"
        # A certificate the CA did not sign: refused too.
        stranger = tls_env(pki.ca.cert, other_pki.issue("stranger"))
        stranger_m = TlsSettings(
            cert_file=stranger.cert_file,
            key_file=stranger.key_file,
            ca_file=str(pki.ca.cert),
            client_auth=True,
            cert=stranger.cert,
            key=stranger.key,
            ca=pki.ca.cert.read_bytes(),
        )
        assert await health(server.port, stranger_m) == "UNAVAILABLE"
        assert await health(server.port, None) == "UNAVAILABLE"
        assert await asyncio.to_thread(healthcheck.check, server.port, tls=caller)
    finally:
        await server.stop(0)


@pytest.fixture
async def https_site(pki: Pki) -> AsyncIterator[int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    context = tls_env(pki.ca.cert, pki.issue("alert-ingest")).server_ssl_context()
    assert context is not None
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_http_listener_serves_tls_with_the_service_certificate(
    pki: Pki, https_site: int
) -> None:
    trusting = ssl.create_default_context(cafile=str(pki.ca.cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://localhost:{https_site}/", ssl=trusting) as reply:
            assert reply.status == 200 and await reply.text() == "ok"
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
            async with session.get(f"http://localhost:{https_site}/") as reply:
                await reply.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not the trusted CA
            async with session.get(f"https://localhost:{https_site}/") as reply:
                await reply.read()


def test_without_tls_settings_the_http_listener_is_plaintext() -> None:
    assert TlsSettings.from_env({}).server_ssl_context() is None
