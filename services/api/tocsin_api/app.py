"""The api's ASGI application: routes, problem+json for every error, the request size
limit, tracing, and the OpenAPI 3.1 document (docs/api.md)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tocsin_common.tracing import tracer

from tocsin_api import console, models
from tocsin_api.console.security import ConsoleHeaders
from tocsin_api.deps import ApiState
from tocsin_api.problems import PROBLEM_JSON, FieldProblem, Problem, problem_response
from tocsin_api.routes import (
    admin,
    analytics,
    automation_dry_run,
    changes,
    deploy_gates,
    directory,
    health,
    incidents,
    oncall,
    silences,
)
from tocsin_api.status import routes as status_routes

log = logging.getLogger("tocsin.api")

VERSION = "1.0.0"
DEFAULT_MAX_BODY = 64 * 1024
DESCRIPTION = """Tocsin's REST API: incidents, on-call, schedules, silences, services, users,
audit and tokens. Authenticate with `Authorization: Bearer <token>` (an API token or an OIDC
access token); errors are RFC 9457 `application/problem+json`. See docs/api.md."""


def _field(loc: tuple[Any, ...]) -> str:
    """``("body", "user_ids", 0)`` -> ``user_ids[0]``; ``("query", "limit")`` -> ``limit``."""
    out = ""
    for part in loc[1:] if len(loc) > 1 else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def validation_problem(error: RequestValidationError) -> Problem:
    errors = [
        FieldProblem(_field(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")))
        for e in error.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.problem}" for e in errors) or "invalid request"
    return Problem(400, detail, errors)


class BodyLimit:
    """413 for a request body over ``max_bytes``: by its Content-Length before it is read,
    or as it streams in (chunked) before the handler sees more than that."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        return problem_response(
            Problem(413, f"the request body is over {self.max_bytes} bytes", kind="too-large")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        seen = 0
        over = False
        replaced = False

        async def counted() -> Message:
            # Past the limit the app is told the body ended (FastAPI turns any error raised
            # while it reads into a 400); its answer is then replaced by the 413 below.
            nonlocal seen, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answered(message: Message) -> None:
            nonlocal replaced
            if over:
                if not replaced:
                    replaced = True
                    await self._too_large()(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counted, answered)


REQUEST_SECONDS = Histogram(
    "tocsin_api_request_seconds",
    "Time to answer an API request (to its first byte for streams)",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class Tracing:
    """A SERVER span per request, continuing the caller's trace (``traceparent``), named by
    its route template (never the path: it may hold a calendar feed's secret); and the
    request's time in ``tocsin_api_request_seconds`` (/metrics on the metrics port)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = tracer("tocsin.api.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctx = propagate.extract(headers)
        method = scope.get("method", "GET")
        began = time.perf_counter()
        answered: list[tuple[int, float]] = []
        with self.tracer.start_as_current_span(
            method, context=ctx, kind=SpanKind.SERVER, attributes={"http.request.method": method}
        ) as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    answered.append((status, time.perf_counter() - began))
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, sending)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                if answered:
                    status, seconds = answered[0]
                    REQUEST_SECONDS.labels(method, template or "(no route)", str(status)).observe(
                        seconds
                    )


# Answers every route may give, documented once for all (problem+json).
COMMON_PROBLEMS = {
    "400": "a parameter or body field is invalid (`errors` names each)",
    "401": "no valid credential",
    "403": "the caller's role does not allow it (the reason is in `detail`)",
    "404": "no such resource (or one the caller may not read)",
    "413": "the request body is too large",
    "429": "too many requests with this token: retry after `Retry-After` seconds",
    "503": "a Tocsin service is unavailable: retry",
}
EXTRA_PROBLEMS = {"409": "the request conflicts with the resource's state", "412": "stale ETag"}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error documented as problem+json (and FastAPI's
    422, which this API answers as 400, removed)."""
    doc = get_openapi(
        title="Tocsin API",
        version=VERSION,
        openapi_version="3.1.0",
        description=DESCRIPTION,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDetails"] = models.ProblemDetails.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas.setdefault("FieldError", models.FieldError.model_json_schema())
    schemas["ProblemDetails"].pop("$defs", None)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    shared = doc["components"].setdefault("responses", {})
    for code, description in {**COMMON_PROBLEMS, **EXTRA_PROBLEMS}.items():
        shared[f"Problem{code}"] = {"description": description, "content": problem}
    shared["Problem429"]["headers"] = {
        "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
    }
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            public = path in ("/healthz", "/readyz") or path.startswith("/api/v1/calendars/")
            codes = ["400", "503"]
            if path.startswith("/api/v1/calendars/"):
                codes.append("404")
            if not public:
                codes = [*COMMON_PROBLEMS, *EXTRA_PROBLEMS]
                operation["security"] = [{"bearer": []}]
            for code in codes:
                responses.setdefault(code, {"$ref": f"#/components/responses/Problem{code}"})
    return doc


def create_app(state: ApiState | None, lifespan: Any = None, max_body_bytes: int = 0) -> FastAPI:
    """The app; ``state`` now (tests), or set by ``lifespan`` at start (the entry point)."""
    app = FastAPI(
        lifespan=lifespan,
        title="Tocsin API",
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        # FastAPI's own telemetry would open a second SERVER span per request and record
        # the raw path (a calendar feed's secret): the Tracing middleware does it instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if state is not None:
        app.state.api = state
    for module in (
        health,
        incidents,
        oncall,
        silences,
        directory,
        admin,
        analytics,
        deploy_gates,
        changes,
        automation_dry_run,
    ):
        app.include_router(module.router)

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem) -> Response:
        return problem_response(problem)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> Response:
        return problem_response(validation_problem(error))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        problem = Problem(error.status_code, str(error.detail), headers=dict(error.headers or {}))
        return problem_response(problem)

    @app.exception_handler(Exception)
    async def on_error(request: Request, error: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return problem_response(Problem(500, "internal error; the api logged it"))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # The web console (docs/console.md): its pages, static files and "/" leading to it; its
    # Problem handler answers HTML under /console and problem+json elsewhere, as above.
    console.install(app)
    status_routes.install(app)  # the public status page (docs/status-page.md)
    app.add_middleware(ConsoleHeaders)
    limit = max_body_bytes or (state.settings.max_body_bytes if state else DEFAULT_MAX_BODY)
    app.add_middleware(BodyLimit, max_bytes=limit)
    app.add_middleware(Tracing)
    return app
