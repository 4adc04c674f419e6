"""`python -m tocsin_common.healthcheck PORT [SERVICE]`: exit 0 when the gRPC health
service on this host's PORT answers SERVING (for container health checks).

With TLS configured (TOCSIN_TLS_*, tocsin_common.transport) it connects to localhost:PORT
over TLS, verifying the server against TOCSIN_TLS_CA_FILE and presenting the process's
certificate under mTLS: the server certificate must then name localhost."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tocsin_common.transport import TlsSettings


def _channel(port: int, tls: TlsSettings | None) -> grpc.Channel:
    if tls is not None and tls.dials_tls:
        return grpc.secure_channel(f"localhost:{port}", tls.channel_credentials())
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def check(
    port: int, service: str = "", timeout: float = 3.0, tls: TlsSettings | None = None
) -> bool:
    with _channel(port, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or not args[0].isdigit():
        print("usage: python -m tocsin_common.healthcheck PORT [SERVICE]", file=sys.stderr)
        return 2
    tls = TlsSettings.from_env()
    return 0 if check(int(args[0]), args[1] if len(args) > 1 else "", tls=tls) else 1


if __name__ == "__main__":
    raise SystemExit(main())
