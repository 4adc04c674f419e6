"""The gRPC server's last word on an exception a servicer did not answer itself.

A servicer answers what it expects (``context.abort``). Whatever escapes it would reach
the client as UNKNOWN carrying Python's exception text: this interceptor maps it instead.
So does a request protobuf cannot parse (a string that is not UTF-8, messages nested over
protobuf's limit of 100): gRPC would answer UNKNOWN with the DecodeError, so the
interceptor parses requests itself and answers INVALID_ARGUMENT ``(request): ...``.
InvalidInput (field errors) becomes INVALID_ARGUMENT naming each field, with the list as
JSON in the ``tocsin-field-errors`` trailer; anything else INTERNAL with a reference to
the log line that has the traceback, and no exception text (it may quote internals).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from tocsin_common.validation import FieldError, InvalidInput, clip

log = logging.getLogger("tocsin.grpc")

FIELD_ERRORS_TRAILER = "tocsin-field-errors"

# What a servicer raises to end a call it already answered (abort) or that was cancelled.
_PASS_THROUGH: tuple[type[BaseException], ...] = (grpc.aio.AbortError,)


# A client refuses metadata over 8 KB (grpc.max_metadata_size) as RESOURCE_EXHAUSTED: the
# details and the trailer together stay well under it.
MAX_LISTED_ERRORS = 10
_MAX_PROBLEM_CHARS = 200


def listed(errors: list[FieldError]) -> list[FieldError]:
    """The first MAX_LISTED_ERRORS errors, clipped, and how many more there were."""
    shown = [
        FieldError(clip(e.field, 100), clip(e.problem, _MAX_PROBLEM_CHARS))
        for e in errors[:MAX_LISTED_ERRORS]
    ]
    if len(errors) > MAX_LISTED_ERRORS:
        shown.append(FieldError("(more)", f"{len(errors) - MAX_LISTED_ERRORS} more not listed"))
    return shown


async def abort_invalid(context: grpc.aio.ServicerContext, errors: list[FieldError]) -> NoReturn:
    """End the call INVALID_ARGUMENT, the field errors (the first MAX_LISTED_ERRORS) in
    the details and the trailer."""
    errors = listed(errors)
    trailer = json.dumps([e.as_dict() for e in errors])
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        "; ".join(str(e) for e in errors),
        trailing_metadata=((FIELD_ERRORS_TRAILER, trailer),),
    )
    raise AssertionError("abort returned")  # pragma: no cover


async def map_error(error: Exception, method: str, context: grpc.aio.ServicerContext) -> NoReturn:
    """Answer ``error`` as INVALID_ARGUMENT (InvalidInput) or INTERNAL (the rest)."""
    if isinstance(error, InvalidInput):
        await abort_invalid(context, error.errors)
    reference = uuid.uuid4().hex[:12]
    log.error(
        "gRPC call failed",
        exc_info=(type(error), error, error.__traceback__),
        extra={"method": method, "reference": reference},
    )
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (reference {reference}); the call failed"
    )
    raise AssertionError("abort returned")  # pragma: no cover


def _parse_problem(error: DecodeError) -> str:
    text = str(error)
    if "MaxDepth" in text or "recursion" in text.lower():
        return "is nested too deeply to parse (protobuf's limit is 100 levels)"
    if "UTF-8" in text:
        return "has a string field that is not valid UTF-8"
    return "is not a valid protobuf message of this method's request type"


def _parser(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as error:
            raise InvalidInput([FieldError("(request)", _parse_problem(error))]) from None

    return parse


async def _parsed(
    requests: AsyncIterator[bytes], parse: Callable[[bytes], Any]
) -> AsyncIterator[Any]:
    async for raw in requests:
        yield parse(raw)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps what escapes a servicer (see the module's docstring), for every kind of call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        # Requests reach the behaviours below as bytes, parsed there (see the docstring).
        parse = _parser(handler.request_deserializer or (lambda raw: raw))
        codec = {"request_deserializer": None, "response_serializer": handler.response_serializer}
        streaming_in = bool(handler.stream_unary or handler.stream_stream)

        def parsed(request: Any) -> Any:
            return _parsed(request, parse) if streaming_in else parse(request)

        if handler.unary_unary or handler.stream_unary:
            inner_unary = handler.unary_unary or handler.stream_unary

            async def unary_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner_unary(parsed(request), context)
                except _PASS_THROUGH:
                    raise
                except Exception as error:
                    await map_error(error, method, context)

            make = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return make(unary_out, **codec)  # type: ignore[no-any-return]
        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in inner_stream(parsed(request), context):
                    yield item
            except _PASS_THROUGH:
                raise
            except Exception as error:
                await map_error(error, method, context)

        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return make(stream_out, **codec)  # type: ignore[no-any-return]
