"""The deploy gate's evaluation under load, over REST, on the real services (the
integration harness's stack): ``POST /api/v1/deploy-gates/evaluate`` sent open-loop at a
steady rate (default 200/s: each request leaves on its schedule, whether or not the earlier
ones answered), latency from send to answer; p50/p99 (target: p99 <= 20 ms at 200/s).
Beside it, the same evaluations over gRPC straight to insight (the api's share is the
difference). On a shared machine latency follows the other load; the CPU time the api and
insight processes spend per evaluation (``cpu_ms_per_evaluation``, from /proc) does much
less, so it is reported too (and the load generator's own: its REST client is a lean
keep-alive HTTP/1.1 client, not httpx, to leave the cores to the stack). The gate evaluated has a freeze window (not covering now) and an open-incident
rule; insight reads its open incidents, freezes and overrides from PostgreSQL on each call,
and every decision is an audit record (acks=all on Kafka) before it answers.

    TOCSIN_KAFKA_BOOTSTRAP=... TOCSIN_REDIS_URL=... TOCSIN_POSTGRES_...=... \
        python -m bench.gate_bench [--rate 200] [--seconds 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from redis.asyncio import Redis
from tocsin.v1 import deploy_gate_service_pb2, deploy_gate_service_pb2_grpc

from bench.api_bench import summary
from bench.ingest_bench import _HttpConnection
from bench.results_io import add_out_argument, report
from tests.integration.harness import Stack, infra_from_env

SERVICE = "bench-gate"
BODY = {"service": SERVICE, "environment": "production", "version": "1.0.0"}


def config() -> str:
    policy = {
        "id": "bench-policy",
        "name": "Bench",
        "levels": [{"delay": "1h", "targets": [{"type": "user", "id": "bench-user"}]}],
    }
    gate = {
        "id": "bench-prod",
        "services": [SERVICE],
        "environments": ["production"],
        "freeze_windows": [
            {"name": "new-year", "cron": "0 0 1 1 *", "duration": "1h", "reason": "new year"}
        ],
        "open_incidents": {"fail_at": {"urgency": "high"}},
    }
    return yaml.safe_dump(
        {
            "version": 1,
            "services": [
                {
                    "id": SERVICE,
                    "name": "Bench gate",
                    "team": "bench",
                    "escalation_policy": "bench-policy",
                }
            ],
            "teams": [{"id": "bench", "name": "Bench", "members": ["bench-user"]}],
            "users": [{"id": "bench-user", "name": "Bench", "email": "bench@example.com"}],
            "escalation_policies": [policy],
            "change_control": {"gates": [gate]},
        }
    )


FIRST_ERRORS: dict[str, str] = {}  # the first error of each kind of call, for the report


async def open_loop(send: Any, rate: float, count: int) -> tuple[list[float], int, float]:
    """``count`` calls of ``send()`` started every 1/rate s; latencies (ms), errors, and the
    rate actually reached."""
    times: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        began = time.perf_counter()
        try:
            await send()
        except Exception as e:  # counted (the first one kept); the run goes on
            errors += 1
            FIRST_ERRORS.setdefault(getattr(send, "__name__", "call"), repr(e)[:300])
            return
        times.append((time.perf_counter() - began) * 1000)

    tasks = []
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    sent_in = time.perf_counter() - start
    await asyncio.gather(*tasks)
    return times, errors, count / sent_in if sent_in else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(stack: Stack) -> dict[str, int]:
    out = {}
    for name in ("api", "insight"):
        proc = stack.services[name].proc
        assert proc is not None
        out[name] = proc.pid
    return out


class LeanClient:
    """Keep-alive HTTP/1.1 connections to the api, one request outstanding on each, a new one
    opened when every open one is busy, up to ``max_connections`` (then a request waits for
    one, as httpx's pool does): the load generator shares the two cores with the stack, and
    httpx's client costs about as much CPU per request as the api does."""

    def __init__(self, url: str, token: str, max_connections: int = 200) -> None:
        host_port = url.split("://", 1)[1]
        self._host, port = host_port.rsplit(":", 1)
        self._port = int(port)
        self._token = token
        self._max = max_connections
        self._idle: asyncio.Queue[_HttpConnection] = asyncio.Queue()
        self._all: list[_HttpConnection] = []

    async def _connection(self) -> _HttpConnection:
        if self._idle.empty() and len(self._all) < self._max:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(_HttpConnection, self._host, self._port)
            self._all.append(connection)
            return connection
        return await self._idle.get()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        connection = await self._connection()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n"
            f"Authorization: Bearer {self._token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            answer = await connection.request(head + body)
        except Exception:  # a broken connection is dropped, not reused
            self._all.remove(connection)
            connection.close()
            raise
        self._idle.put_nowait(connection)
        return answer

    def close(self) -> None:
        for connection in self._all:
            connection.close()


async def measure(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    count = int(rate * seconds)
    out: dict[str, Any] = {}
    http = LeanClient(stack.api_url, stack.admin_token)
    payload = json.dumps(BODY).encode()

    async def rest() -> None:
        status, body = await http.post("/api/v1/deploy-gates/evaluate", payload)
        if status != 200 or json.loads(body)["outcome"] != "pass":
            raise RuntimeError(body.decode(errors="replace"))

    try:
        for _ in range(50):  # warm-up
            await rest()
        pids = _pids(stack)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        times, errors, reached = await open_loop(rest, rate, count)
        out["rest"] = {
            **summary(times),
            "errors": errors,
            "rate_per_s": round(reached, 1),
            "cpu_ms_per_evaluation": {
                **{
                    name: round((cpu_seconds(pid) - before[name]) * 1000 / count, 3)
                    for name, pid in pids.items()
                },
                "load_generator": round((time.process_time() - client_before) * 1000 / count, 3),
            },
        }
    finally:
        http.close()
    async with stack.channel("insight") as channel:
        stub = deploy_gate_service_pb2_grpc.DeployGateServiceStub(channel)
        request = deploy_gate_service_pb2.EvaluateGateRequest(
            service=BODY["service"], environment=BODY["environment"], version=BODY["version"]
        )

        async def grpc_call() -> None:
            await stub.Evaluate(request, timeout=30)

        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        times, errors, reached = await open_loop(grpc_call, rate, count)
        out["grpc_direct"] = {
            **summary(times),
            "errors": errors,
            "rate_per_s": round(reached, 1),
            "cpu_ms_per_evaluation": {
                "insight": round(
                    (cpu_seconds(pids["insight"]) - before["insight"]) * 1000 / count, 3
                )
            },
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    add_out_argument(parser)
    args = parser.parse_args()
    bootstrap, redis_url = infra_from_env()
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(bootstrap, redis_url, Path(workdir), config())
        stack.extra_env = {"OTEL_TRACES_EXPORTER": "none", "TOCSIN_LOG_LEVEL": "WARNING"}
        await stack.start()
        try:
            found = await measure(stack, args.rate, args.seconds)
        finally:
            await stack.stop()
    result = {
        "bench": "gate",
        # Other work on the machine skews every number: the 1-minute load when it ended.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "rate_per_s": args.rate,
        "evaluations": int(args.rate * args.seconds),
        "evaluate": found,
        "targets": {"rest_p99_ms": 20, "rate_per_s": 200},
        "met": {"rest_p99": found["rest"]["p99_ms"] <= 20 and found["rest"]["errors"] == 0},
        "first_errors": FIRST_ERRORS,
    }
    report(result, args.out)


if __name__ == "__main__":
    asyncio.run(main())
