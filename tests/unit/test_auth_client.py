"""A channel made with bearer_interceptors carries the credential on every kind of call
(grpc.aio files an interceptor under one kind only), against a real in-process server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tocsin_common.auth.access import bearer_interceptors


def _auth(context: grpc.aio.ServicerContext) -> bytes:
    found = dict(context.invocation_metadata() or ()).get("authorization", "")
    return str(found).encode()


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _auth(context)


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield _auth(context)


async def _client_stream(requests: Any, context: grpc.aio.ServicerContext) -> bytes:
    async for _ in requests:
        pass
    return _auth(context)


async def _bidi(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield _auth(context)


async def test_every_kind_of_call_carries_the_credential() -> None:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    expected = b"Bearer tocsin_test"

    async def one() -> AsyncIterator[bytes]:
        yield b"x"

    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=bearer_interceptors("tocsin_test")
        ) as channel:
            assert await channel.unary_unary("/t.T/Unary")(b"") == expected
            assert [m async for m in channel.unary_stream("/t.T/ServerStream")(b"")] == [expected]
            assert await channel.stream_unary("/t.T/ClientStream")(one()) == expected
            assert [m async for m in channel.stream_stream("/t.T/Bidi")(one())] == [expected]
    finally:
        await server.stop(0)
