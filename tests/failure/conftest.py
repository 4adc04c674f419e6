"""The failure suite runs on the session's stack (tests/conftest.py), after the integration
tests when both run (`make test`), or alone with a longer load (`make test-failure`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a line to the terminal even while pytest captures output."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line)

    return say
