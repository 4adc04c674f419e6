"""Recording peers: an HTTP server that keeps every request it receives (the webhook a page
is delivered to) and a real OTLP/gRPC trace receiver (opentelemetry-proto's collector
TraceService) that keeps every span exported to it.

Used by `make up` (as a process, writing JSON lines) and by the integration tests
(in-process, asserting on what was received).

    python -m tools.recorder --http-port 9999 --otlp-port 10000 --out .run/dev/recorded
    python -m tools.recorder --show-trace TRACE_ID --out .run/dev/recorded
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingHttpPeer:
    """Answers every request with `status` (200 by default) and records it."""

    port: int
    host: str = "127.0.0.1"
    out: Path | None = None
    status: int = 200
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A deep backlog: many deliveries at once must not wait on SYN retries.
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), body)
        self.requests.append(recorded)
        self._arrived.set()
        if self.out:
            with open(self.out / "pages.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "method": recorded.method,
                            "path": recorded.path,
                            "headers": recorded.headers,
                            "body": body.decode("utf-8", "replace"),
                        }
                    )
                    + "\n"
                )
        return web.json_response({"ok": self.status < 400}, status=self.status)

    async def wait_for(self, count: int, timeout: float) -> list[RecordedRequest]:
        """Wait until at least `count` requests arrived; return them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.requests) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return list(self.requests)


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _attr_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class OtlpTraceSink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver keeping every span it is sent."""

    def __init__(self, port: int, out: Path | None = None) -> None:
        self.port = port
        self.out = out
        self.spans: list[ReceivedSpan] = []
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]  # generated, untyped
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server:
            await self._server.stop(0)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    _attr_value(a.value)
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _attr_value(a.value) for a in span.attributes},
                        )
                    )
        self.spans.extend(received)
        if self.out:
            with open(self.out / "spans.jsonl", "a") as f:
                for s in received:
                    f.write(json.dumps(s.as_dict(), default=str) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def format_trace(spans: list[dict[str, Any]]) -> str:
    """One trace as an indented tree: service, span name, duration."""
    by_parent: dict[str, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    for s in sorted(spans, key=lambda s: s["start_ns"]):
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else ""
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in by_parent.get(parent, []):
            ms = (s["end_ns"] - s["start_ns"]) / 1e6
            lines.append(f"{'  ' * depth}{s['service']}: {s['name']}  ({ms:.1f} ms)")
            walk(s["span_id"], depth + 1)

    walk("", 0)
    return "\n".join(lines)


async def serve(http_port: int, otlp_port: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    peer = RecordingHttpPeer(http_port, out=out)
    sink = OtlpTraceSink(otlp_port, out=out)
    await peer.start()
    await sink.start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--http-port", type=int, default=9999)
    parser.add_argument("--otlp-port", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=Path(".run/dev/recorded"))
    parser.add_argument("--show-trace", metavar="TRACE_ID")
    args = parser.parse_args()
    if args.show_trace:
        spans = [json.loads(line) for line in (args.out / "spans.jsonl").read_text().splitlines()]
        print(format_trace([s for s in spans if s["trace_id"] == args.show_trace]))
        return
    asyncio.run(serve(args.http_port, args.otlp_port, args.out))


if __name__ == "__main__":
    main()
