"""The failure suite runs on the integration stack (`make test-failure`)."""

from tests.integration.conftest import stack  # noqa: F401 - the session fixture
