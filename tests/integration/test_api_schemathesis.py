"""Property-based tests of the live api against its own OpenAPI document (schemathesis):
generated requests, valid and invalid, to every operation; no answer may be a 5xx, and
every answer must match the document (status code, content type, body schema).

Runs as a viewer of one team (api-viewer): reads answer with real data, mutations are
refused (403) rather than silencing or overriding what the other suites rely on. The SSE
stream is left out (it never ends); test_api_stream.py covers it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.integration.api_client import trigger
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

# Per operation: modest, so the run takes about a minute (TOCSIN_FUZZ_SCALE multiplies it).
MAX_EXAMPLES = 8 * int(os.environ.get("TOCSIN_FUZZ_SCALE", "1"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


async def test_generated_requests_get_no_5xx_and_answers_match_the_schema(
    stack: Stack, tmp_path: Path
) -> None:
    await trigger(stack)  # some data to read back
    token, _ = await stack.token_for("api-viewer")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{stack.api_url}/api/v1/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "17",
        "--workers",
        "2",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path",
        "/api/v1/incidents/stream",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "20",
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:] + "\n" + stack.services["api"].log_tail(3000)
    assert "passed" in text.lower(), text[-3000:]
