"""Service credentials: how one Tocsin service proves to another that it is that service.

Every service of a deployment shares one secret, ``TOCSIN_SERVICE_SECRET`` (or the file at
``TOCSIN_SERVICE_SECRET_FILE``). A service's credential is
``tocsin-svc.<service>.<HMAC-SHA256(secret, service)>``: a receiver recomputes the MAC, so
nothing is stored and nothing expires; rotating the secret (restart every service with the
new one) replaces every credential. A holder of the secret can speak as any service, so it
is a deployment secret like the database password; with mTLS (docs/deployment.md) the
certificates add a second, per-service proof.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from tocsin_common.secrets import read_secret

SERVICE_SECRET_ENV = "TOCSIN_SERVICE_SECRET"
_PREFIX = "tocsin-svc."
KNOWN_SERVICES = frozenset(
    {"alert-ingest", "correlation", "escalation", "notification", "insight", "api"}
)


def read_service_secret(env: Mapping[str, str] | None = None) -> bytes:
    secret = read_secret(SERVICE_SECRET_ENV, env)
    assert secret is not None
    return secret.encode()


def _mac(secret: bytes, service: str) -> str:
    return hmac.new(
        secret, f"tocsin service credential v1:{service}".encode(), hashlib.sha256
    ).hexdigest()


def service_credential(secret: bytes, service: str) -> str:
    if service not in KNOWN_SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {sorted(KNOWN_SERVICES)}")
    return f"{_PREFIX}{service}.{_mac(secret, service)}"


def verify_service_credential(secret: bytes, credential: str) -> str | None:
    """The service ``credential`` proves, or None."""
    if not credential.startswith(_PREFIX):
        return None
    service, _, mac = credential[len(_PREFIX) :].rpartition(".")
    if service not in KNOWN_SERVICES:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(secret, service).encode()):
        return None
    return service


def is_service_credential(credential: str) -> bool:
    return credential.startswith(_PREFIX)
