"""Transport security settings, read from the environment at start: TLS (and optional mTLS)
for the gRPC and HTTP listeners and the channels between services, Kafka SSL/SASL, Redis
ACL credentials and TLS.

Parsing is pure (an env mapping in, frozen dataclasses out, every problem a
:class:`TransportError` naming the variable); the files named are read once here, so a
missing or unreadable certificate stops the process at start rather than at its first call.
The objects the libraries take (grpc credentials, ``ssl.SSLContext``, aiokafka keyword
arguments, redis-py keyword arguments) are built from them on demand.

Without TOCSIN_TLS_CERT_FILE / TOCSIN_TLS_KEY_FILE the listeners are plaintext, as are the
channels between services: for loopback (``make up``) and for networks where a mesh or a
NetworkPolicy provides the protection (docs/deployment.md).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from tocsin_common.secrets import SecretError, read_secret


class TransportError(ValueError):
    """A transport security variable holds a value that cannot be used."""


def _read_file(env: Mapping[str, str], name: str) -> tuple[str, bytes] | None:
    """(path, contents) of the file the variable ``name`` names; None when unset."""
    path = env.get(name, "").strip()
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TransportError(f"{name}={path}: no such file") from None
    except IsADirectoryError:
        raise TransportError(f"{name}={path}: a directory, expected a PEM file") from None
    except OSError as e:
        raise TransportError(f"{name}={path}: cannot be read ({e.strerror})") from None
    if b"-----BEGIN " not in data:
        raise TransportError(f"{name}={path}: not a PEM file (no -----BEGIN line)")
    return path, data


def _check_ca(name: str, path: str) -> None:
    """The CA file loads as trust roots (else a TransportError naming ``name``)."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as e:
        raise TransportError(f"{name}={path}: no usable CA certificate ({e.reason})") from None


def _check_pair(cert_name: str, cert: str, key_name: str, key: str) -> None:
    """The certificate and key load together (else a TransportError naming both)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise TransportError(
            f"{cert_name}={cert}, {key_name}={key}: not a usable certificate and matching "
            f"private key ({e.reason})"
        ) from None


# ---------------------------------------------------------------------------------------------
# TLS for gRPC and HTTP
# ---------------------------------------------------------------------------------------------

CLIENT_AUTH_MODES = ("none", "require")


@dataclass(frozen=True)
class TlsSettings:
    """TLS of this process's listeners and of its channels to other Tocsin services.

    - ``cert``/``key`` set: the gRPC and HTTP listeners serve TLS with them, and the
      process's gRPC channels to other services use TLS.
    - ``ca`` set: servers are verified against it (else against the system's roots); with
      ``client_auth`` it also verifies client certificates.
    - ``client_auth``: the gRPC listener requires a client certificate signed by ``ca``, and
      the channels present ``cert``/``key`` (mTLS). The HTTP listeners never ask for one:
      monitoring tools and people's browsers reach them.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    client_auth: bool = False
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    ca: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsSettings:
        env = os.environ if env is None else env
        cert = _read_file(env, "TOCSIN_TLS_CERT_FILE")
        key = _read_file(env, "TOCSIN_TLS_KEY_FILE")
        ca = _read_file(env, "TOCSIN_TLS_CA_FILE")
        if cert and not key:
            raise TransportError("TOCSIN_TLS_CERT_FILE is set without TOCSIN_TLS_KEY_FILE")
        if key and not cert:
            raise TransportError("TOCSIN_TLS_KEY_FILE is set without TOCSIN_TLS_CERT_FILE")
        if key and b"PRIVATE KEY-----" not in key[1]:
            raise TransportError(f"TOCSIN_TLS_KEY_FILE={key[0]}: holds no PEM private key")
        if cert and key:
            _check_pair("TOCSIN_TLS_CERT_FILE", cert[0], "TOCSIN_TLS_KEY_FILE", key[0])
        if ca:
            _check_ca("TOCSIN_TLS_CA_FILE", ca[0])
        mode = env.get("TOCSIN_TLS_CLIENT_AUTH", "").strip().lower() or "none"
        if mode not in CLIENT_AUTH_MODES:
            raise TransportError(
                f"TOCSIN_TLS_CLIENT_AUTH={mode!r}: expected one of {', '.join(CLIENT_AUTH_MODES)}"
            )
        client_auth = mode == "require"
        if client_auth and not cert:
            raise TransportError(
                "TOCSIN_TLS_CLIENT_AUTH=require needs TOCSIN_TLS_CERT_FILE and "
                "TOCSIN_TLS_KEY_FILE (served to clients, presented to servers)"
            )
        if client_auth and not ca:
            raise TransportError(
                "TOCSIN_TLS_CLIENT_AUTH=require needs TOCSIN_TLS_CA_FILE "
                "(the CA that signs the services' client certificates)"
            )
        return cls(
            cert_file=cert[0] if cert else None,
            key_file=key[0] if key else None,
            ca_file=ca[0] if ca else None,
            client_auth=client_auth,
            cert=cert[1] if cert else None,
            key=key[1] if key else None,
            ca=ca[1] if ca else None,
        )

    @property
    def serves_tls(self) -> bool:
        """The listeners serve TLS."""
        return self.cert is not None

    @property
    def dials_tls(self) -> bool:
        """Channels to other services use TLS (this process serves TLS, or has a CA)."""
        return self.cert is not None or self.ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        if self.cert is None or self.key is None:
            raise TransportError("TLS is not configured (TOCSIN_TLS_CERT_FILE/KEY_FILE unset)")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.client_auth else None,
            require_client_auth=self.client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if self.client_auth:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
            )
        return grpc.ssl_channel_credentials(root_certificates=self.ca)

    def server_ssl_context(self) -> ssl.SSLContext | None:
        """For aiohttp's listeners: None when TLS is off. No client certificate asked."""
        if self.cert_file is None or self.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSecurity:
    """How this process's Kafka clients (aiokafka's and faust's) reach the brokers."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        env = os.environ if env is None else env
        protocol = env.get("TOCSIN_KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
        if protocol not in KAFKA_PROTOCOLS:
            raise TransportError(
                f"TOCSIN_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"
            )
        sasl = protocol.startswith("SASL_")
        ssl_on = protocol.endswith("SSL")
        username = env.get("TOCSIN_KAFKA_SASL_USERNAME", "").strip() or None
        has_password = bool(
            env.get("TOCSIN_KAFKA_SASL_PASSWORD") or env.get("TOCSIN_KAFKA_SASL_PASSWORD_FILE")
        )
        raw_mechanism = env.get("TOCSIN_KAFKA_SASL_MECHANISM", "").strip().upper()
        if not sasl and (username or has_password or raw_mechanism):
            raise TransportError(
                f"TOCSIN_KAFKA_SASL_* are set but TOCSIN_KAFKA_SECURITY_PROTOCOL={protocol}: "
                "set it to SASL_SSL (or SASL_PLAINTEXT) for them to be used"
            )
        ca = _read_file(env, "TOCSIN_KAFKA_SSL_CA_FILE")
        if ca and not ssl_on:
            raise TransportError(
                f"TOCSIN_KAFKA_SSL_CA_FILE is set but TOCSIN_KAFKA_SECURITY_PROTOCOL={protocol}: "
                "set it to SSL or SASL_SSL for it to be used"
            )
        if ca:
            _check_ca("TOCSIN_KAFKA_SSL_CA_FILE", ca[0])
        if not sasl:
            return cls(protocol=protocol, ca_file=ca[0] if ca else None)
        mechanism = raw_mechanism or "SCRAM-SHA-512"
        if mechanism not in SASL_MECHANISMS:
            raise TransportError(
                f"TOCSIN_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of "
                f"{', '.join(SASL_MECHANISMS)}"
            )
        if mechanism == "PLAIN" and not ssl_on:
            raise TransportError(
                "TOCSIN_KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password in "
                "clear: use SASL_SSL, or a SCRAM mechanism"
            )
        if not username:
            raise TransportError(f"TOCSIN_KAFKA_SASL_USERNAME: required with {protocol}")
        try:
            password = read_secret("TOCSIN_KAFKA_SASL_PASSWORD", env)
        except SecretError as e:
            raise TransportError(str(e)) from None
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism,
            username=username,
            password=password,
            ca_file=ca[0] if ca else None,
        )

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifying the brokers against the CA file (else the system's roots) and their
        host names; None without SSL."""
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisConnection:
    """Where Redis is and how to log in: ``redis://`` or ``rediss://`` (TLS), an ACL user
    and its password (a secret, never in the URL), and the CA that signs Redis's cert."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None  # for a Redis that asks for client certificates
    key_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisConnection:
        env = os.environ if env is None else env
        url = env.get("TOCSIN_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise TransportError(
                f"TOCSIN_REDIS_URL: scheme {parts.scheme!r}; expected redis:// or rediss:// (TLS)"
            )
        if parts.password is not None:
            raise TransportError(
                "TOCSIN_REDIS_URL carries a password: set TOCSIN_REDIS_PASSWORD or "
                "TOCSIN_REDIS_PASSWORD_FILE instead (URLs end up in logs and process lists)"
            )
        username = env.get("TOCSIN_REDIS_USERNAME", "").strip() or parts.username or None
        try:
            password = read_secret("TOCSIN_REDIS_PASSWORD", env, required=False)
        except SecretError as e:
            raise TransportError(str(e)) from None
        if username and password is None:
            raise TransportError(
                "TOCSIN_REDIS_USERNAME is set without TOCSIN_REDIS_PASSWORD(_FILE)"
            )
        ca = _read_file(env, "TOCSIN_REDIS_CA_FILE")
        cert = _read_file(env, "TOCSIN_REDIS_CERT_FILE")
        key = _read_file(env, "TOCSIN_REDIS_KEY_FILE")
        tls = parts.scheme == "rediss"
        for name, value in (
            ("TOCSIN_REDIS_CA_FILE", ca),
            ("TOCSIN_REDIS_CERT_FILE", cert),
            ("TOCSIN_REDIS_KEY_FILE", key),
        ):
            if value and not tls:
                raise TransportError(
                    f"{name} is set but TOCSIN_REDIS_URL is redis://: use rediss:// for TLS"
                )
        if bool(cert) != bool(key):
            raise TransportError("TOCSIN_REDIS_CERT_FILE and TOCSIN_REDIS_KEY_FILE go together")
        if cert and key:
            _check_pair("TOCSIN_REDIS_CERT_FILE", cert[0], "TOCSIN_REDIS_KEY_FILE", key[0])
        if ca:
            _check_ca("TOCSIN_REDIS_CA_FILE", ca[0])
        netloc = parts.netloc.rpartition("@")[2]  # the user, if any, is passed on its own
        return cls(
            url=parts._replace(netloc=netloc).geturl(),
            username=username,
            password=password,
            ca_file=ca[0] if ca else None,
            cert_file=cert[0] if cert else None,
            key_file=key[0] if key else None,
        )

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("rediss://")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's ``from_url`` (client or connection pool)."""
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.uses_tls:
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = True
            options["ssl_min_version"] = ssl.TLSVersion.TLSv1_2
            if self.ca_file:
                options["ssl_ca_certs"] = self.ca_file
            if self.cert_file:
                options["ssl_certfile"] = self.cert_file
                options["ssl_keyfile"] = self.key_file
        return options


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

POSTGRES_SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresConnection:
    """Where PostgreSQL is and how to log in: a ``postgresql://user@host:port/db`` URL (no
    password in it), the password as a secret (TOCSIN_POSTGRES_PASSWORD or its _FILE), the
    TLS mode (TOCSIN_POSTGRES_SSLMODE, libpq's names) and the CA that signs the server's
    certificate (TOCSIN_POSTGRES_CA_FILE, for verify-ca / verify-full)."""

    url: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresConnection:
        env = os.environ if env is None else env
        url = env.get("TOCSIN_POSTGRES_URL", "").strip() or "postgresql://tocsin@127.0.0.1:5433/tocsin"
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise TransportError(
                f"TOCSIN_POSTGRES_URL: scheme {parts.scheme!r}; expected postgresql://"
            )
        if parts.password is not None:
            raise TransportError(
                "TOCSIN_POSTGRES_URL carries a password: set TOCSIN_POSTGRES_PASSWORD or "
                "TOCSIN_POSTGRES_PASSWORD_FILE instead (URLs end up in logs and process lists)"
            )
        if not parts.hostname or not parts.path.strip("/"):
            raise TransportError(
                f"TOCSIN_POSTGRES_URL={url!r}: expected postgresql://USER@HOST:PORT/DATABASE"
            )
        try:
            password = read_secret("TOCSIN_POSTGRES_PASSWORD", env, required=False)
        except SecretError as e:
            raise TransportError(str(e)) from None
        mode = env.get("TOCSIN_POSTGRES_SSLMODE", "").strip().lower() or "prefer"
        if mode not in POSTGRES_SSL_MODES:
            raise TransportError(
                f"TOCSIN_POSTGRES_SSLMODE={mode!r}: expected one of {', '.join(POSTGRES_SSL_MODES)}"
            )
        ca = _read_file(env, "TOCSIN_POSTGRES_CA_FILE")
        if ca and mode not in ("verify-ca", "verify-full"):
            raise TransportError(
                f"TOCSIN_POSTGRES_CA_FILE is set but TOCSIN_POSTGRES_SSLMODE={mode}: "
                "set it to verify-ca or verify-full for the CA to be used"
            )
        if ca:
            _check_ca("TOCSIN_POSTGRES_CA_FILE", ca[0])
        return cls(url=url, password=password, sslmode=mode, ca_file=ca[0] if ca else None)

    @property
    def uses_tls(self) -> bool:
        return self.sslmode in ("require", "verify-ca", "verify-full")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for psycopg's ``connect`` (libpq parameters) beside the URL."""
        options: dict[str, Any] = {"sslmode": self.sslmode}
        if self.password is not None:
            options["password"] = self.password
        if self.ca_file:
            options["sslrootcert"] = self.ca_file
        elif self.sslmode in ("verify-ca", "verify-full"):
            options["sslrootcert"] = "system"  # the system's roots, as for Kafka and Redis
        return options

    @property
    def display(self) -> str:
        """The URL for logs (it never holds the password)."""
        return self.url
