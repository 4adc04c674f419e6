"""The failure suite runs on the session's stack (tests/conftest.py), after the integration
tests when both run (`make test`), or alone with a longer load (`make test-failure`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a line to the terminal even while pytest captures output (as `make test` does):
    the suite's counts belong in CI's log, pass or fail."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        if capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    return say
