"""docs/api.md's examples, run as written against the live api: every ```sh block of its
"Examples" section, in order, with TOCSIN_API, TOCSIN_TOKEN and INCIDENT set."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.integration.api_client import client, incident_titled, trigger
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def example_blocks() -> list[str]:
    text = DOC.read_text()
    section = text.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def test_the_examples_are_there() -> None:
    blocks = example_blocks()
    assert len(blocks) >= 6 and all("$TOCSIN_API" in b for b in blocks)


async def test_every_example_runs(stack: Stack) -> None:
    title = await trigger(stack)
    async with client(stack) as api:
        incident = await incident_titled(api, title)
    env = {
        **os.environ,
        "TOCSIN_API": stack.api_url,
        "TOCSIN_TOKEN": stack.admin_token,
        "INCIDENT": incident["id"],
    }
    for block in example_blocks():
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            block,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"docs/api.md example failed:\n{block}\n---\n{out.decode()}"
