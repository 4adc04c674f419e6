"""`python -m tocsin_common.healthcheck PORT [SERVICE]`: exit 0 when the gRPC health
service on 127.0.0.1:PORT answers SERVING (for container health checks)."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(port: int, service: str = "", timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
    return 0 if check(int(args[0]), args[1] if len(args) > 1 else "") else 1


if __name__ == "__main__":
    raise SystemExit(main())
