"""Prometheus Alertmanager 0.25 (Debian's package) on loopback, for side-by-side numbers.

Configured as the nearest thing to Tocsin's one-page-per-alert: grouping off (`group_by:
['...']`, every alert its own group), `group_wait: 0s`, one webhook receiver. Installed
with apt when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.procstat import rss_bytes

BINARY = "/usr/bin/prometheus-alertmanager"

CONFIG = """\
route:
  receiver: bench
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: bench
    webhook_configs:
      - url: {url}
        send_resolved: false
        max_alerts: 0
"""


def ensure_installed() -> None:
    if Path(BINARY).exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus-alertmanager"],
        check=True,
        env=env,
    )
    # The package starts a system instance on :9093; the bench runs its own.
    subprocess.run(["service", "prometheus-alertmanager", "stop"], check=False, capture_output=True)


def version() -> str:
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "unknown"


class Alertmanager:
    """One Alertmanager process with its own config and storage, stopped by `stop()`."""

    def __init__(self, port: int, webhook_url: str) -> None:
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="tocsin-bench-am-"))
        (self._dir / "alertmanager.yml").write_text(CONFIG.format(url=webhook_url))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        ensure_installed()
        log = open(self._dir / "alertmanager.log", "wb")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={self._dir / 'alertmanager.yml'}",
                f"--storage.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("alertmanager did not become ready")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def rss_bytes(self) -> int:
        if self._proc is None:
            return 0
        return rss_bytes(self._proc.pid)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._dir, ignore_errors=True)
