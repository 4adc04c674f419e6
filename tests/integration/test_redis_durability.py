"""A service that relies on Redis's durability refuses a Redis that fsyncs once a second.

A second redis-server, with the default ``appendfsync everysec``, on a port of its own;
notification and escalation, started against it with the stack's settings otherwise, exit
with an error naming the setting and the escape hatch instead of serving.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ServiceProcess, Stack, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def everysec_redis(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (tools/devstack.py installs it)"
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "the everysec redis-server did not start"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("name", ["notification", "escalation"])
async def test_service_refuses_redis_without_appendfsync_always(
    stack: Stack, everysec_redis: str, name: str
) -> None:
    base = stack.services[name]
    env = {
        **base.env,
        "TOCSIN_REDIS_URL": everysec_redis,
        "TOCSIN_GRPC_PORT": str(free_port()),
        "TOCSIN_METRICS_PORT": str(free_port()),
        "TOCSIN_HTTP_PORT": str(free_port()),
    }
    env.pop("TOCSIN_REDIS_DURABILITY_CHECK", None)
    process = ServiceProcess(
        f"{name}-everysec", base.module, env, base.log_path.with_name(f"{name}-everysec.log"), 0
    )
    process.start()
    assert process.proc is not None
    try:
        returncode = process.proc.wait(timeout=60)
    finally:
        process.kill()
    log = process.log_tail(20000)
    assert returncode != 0, log
    assert "appendfsync is 'everysec'" in log, log
    assert "TOCSIN_REDIS_DURABILITY_CHECK=warn" in log, log
