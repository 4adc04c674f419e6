"""RFC 9457 problem details: the one error shape of the API, and how gRPC statuses map to
it (pure).

Every error the api answers is ``application/problem+json``: ``{type, title, status,
detail, errors?: [{field, problem}]}``. The services' gRPC errors name the field they are
about (``"until: must be in the future"``); :func:`from_grpc` keeps that naming, renamed to
the API's field where the two differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://tocsin.dev/problems/"

# gRPC status -> HTTP status (docs/api.md#errors).
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# A gRPC message's leading field name: "until: ...", "override.user_id: ...".
_FIELD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\[\]]*(?:, [A-Za-z_][A-Za-z0-9_.\[\]]*)*):\s+(.+)$")


@dataclass(frozen=True)
class FieldProblem:
    field: str
    problem: str


@dataclass
class Problem(Exception):
    """An error answered as problem+json; raise it from any handler."""

    status: int
    detail: str
    errors: list[FieldProblem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = ""  # the type's last segment; default: from the status

    def body(self) -> dict[str, Any]:
        title = (
            HTTPStatus(self.status).phrase
            if self.status in HTTPStatus._value2member_map_
            else "Error"
        )
        body: dict[str, Any] = {
            "type": TYPE_BASE + (self.kind or title.lower().replace(" ", "-").replace("'", "")),
            "title": title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "problem": e.problem} for e in self.errors]
        return body


def invalid(field_name: str, problem: str) -> Problem:
    """A 400 about one field."""
    return Problem(400, f"{field_name}: {problem}", [FieldProblem(field_name, problem)])


def field_problems(message: str, rename: Mapping[str, str] | None = None) -> list[FieldProblem]:
    """The ``field: problem`` parts of a gRPC message (``;``-separated), fields renamed."""
    rename = rename or {}
    out: list[FieldProblem] = []
    for part in message.split("; "):
        match = _FIELD.match(part)
        if match is None:
            continue
        for name in match.group(1).split(", "):
            out.append(FieldProblem(rename.get(name, name), match.group(2)))
    return out


def rename_fields(message: str, rename: Mapping[str, str]) -> str:
    for grpc_name, api_name in rename.items():
        message = re.sub(rf"(^|; |, ){re.escape(grpc_name)}(?=[:,])", rf"\g<1>{api_name}", message)
    return message


def from_grpc(
    code: grpc.StatusCode, message: str, rename: Mapping[str, str] | None = None
) -> Problem:
    """The problem a gRPC error becomes: its status mapped, its fields named (400)."""
    status = GRPC_TO_HTTP.get(code, 502)
    detail = rename_fields(message, rename or {}) if rename else message
    if status == 502:
        # An internal error of a service: its text is not for the caller.
        detail = f"a Tocsin service failed ({code.name})"
    errors = field_problems(message, rename) if status == 400 else []
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Problem(status, detail, errors, headers)


def problem_response(problem: Problem) -> Response:
    """The problem as an RFC 9457 ``application/problem+json`` answer."""
    return Response(
        json.dumps(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )
