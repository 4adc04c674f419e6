"""The REST API's OpenAPI document: valid OpenAPI 3.1, checked in up to date, and every
error documented as problem+json (FastAPI's 422 is answered as 400 here)."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from tools.apispec import SPEC, document, render


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on the first problem


def test_the_checked_in_document_is_the_generated_one() -> None:
    assert SPEC.read_text() == render(document()), (
        "docs/openapi.json is stale against services/api: run `make api-spec` and commit it"
    )


def test_errors_are_problems_and_no_422_is_promised() -> None:
    spec = json.loads(SPEC.read_text())
    shared = spec["components"]["responses"]

    def resolved(answer: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in answer:
            return dict(shared[answer["$ref"].rsplit("/", 1)[1]])
        return answer

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method.upper()} {path} documents a 422"
            for code in ("400", "503"):
                assert "application/problem+json" in resolved(responses[code])["content"], (
                    path,
                    code,
                )
            if not path.startswith(("/healthz", "/readyz", "/api/v1/calendars/")):
                assert operation["security"] == [{"bearer": []}], path
                assert "Retry-After" in resolved(responses["429"])["headers"], path
