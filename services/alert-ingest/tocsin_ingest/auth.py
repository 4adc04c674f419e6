"""Authentication by integration key (pure: a look-up in the loaded configuration).

A key is bound to one service through one integration; the integration's type must accept
the format the event arrived in. Failures are field errors (HTTP 400, gRPC
INVALID_ARGUMENT, a dead letter on alerts.raw) naming where the key came from.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin_common.config import Integration, Service, TocsinConfig
from tocsin_common.validation import FieldError, InvalidInput

UNKNOWN_KEY = "is not a known integration key"


class KeyCache:
    """Keys already found in the current configuration (a dict look-up instead of the
    configuration model's); forgets everything when the configuration object changes
    (a reload). Only known keys are kept, so its size is bounded by the configuration."""

    def __init__(self) -> None:
        self._config: TocsinConfig | None = None
        self._found: dict[str, tuple[Service, Integration]] = {}

    def service_for_key(self, config: TocsinConfig, key: str) -> tuple[Service, Integration] | None:
        if config is not self._config:
            self._config, self._found = config, {}
        found = self._found.get(key)
        if found is None:
            found = config.service_for_key(key)
            if found is not None:
                self._found[key] = found
        return found


def authenticate(
    config: TocsinConfig, fmt: str, key: str, field: str, cache: KeyCache | None = None
) -> tuple[Service, Integration]:
    """The service and integration of ``key``, which must accept ``fmt``."""
    if not key:
        raise InvalidInput([FieldError(field, "is required")])
    found = cache.service_for_key(config, key) if cache is not None else config.service_for_key(key)
    if found is None:
        raise InvalidInput([FieldError(field, UNKNOWN_KEY)])
    service, integration = found
    if not integration.accepts(fmt):
        raise InvalidInput(
            [
                FieldError(
                    field,
                    f"belongs to an integration of type {integration.type}, "
                    f"which does not accept {fmt} events",
                )
            ]
        )
    return service, integration


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    value = headers.get("Authorization") or headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()
