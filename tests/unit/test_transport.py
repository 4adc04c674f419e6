"""tocsin_common.transport: TLS, Kafka and Redis security settings parsed from the
environment, each bad value a clear error naming the variable; and what the libraries get."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol
from tocsin_common.faustapp import broker_credentials
from tocsin_common.settings import Settings
from tocsin_common.transport import (
    KafkaSecurity,
    PostgresConnection,
    RedisConnection,
    TlsSettings,
    TransportError,
)

from tests.pki import Pki, make_pki

PASSWORD = "p" * 20 + "q" * 20  # 40 bytes, no placeholder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def pem(pki: Pki) -> dict[str, str]:
    """Real PEM files (openssl): a service certificate, its key, the CA."""
    issued = pki.issue("service")
    return {"cert": str(issued.cert), "key": str(issued.key), "ca": str(pki.ca.cert)}


# --- TLS ----------------------------------------------------------------------------------


def test_tls_is_off_without_variables() -> None:
    tls = TlsSettings.from_env({})
    assert not tls.serves_tls and not tls.dials_tls and not tls.client_auth
    assert tls.server_ssl_context() is None


def test_tls_with_cert_key_and_ca_serves_and_dials(pem: dict[str, str]) -> None:
    tls = TlsSettings.from_env(
        {
            "TOCSIN_TLS_CERT_FILE": pem["cert"],
            "TOCSIN_TLS_KEY_FILE": pem["key"],
            "TOCSIN_TLS_CA_FILE": pem["ca"],
        }
    )
    assert tls.serves_tls and tls.dials_tls and not tls.client_auth
    assert tls.cert == Path(pem["cert"]).read_bytes() and tls.ca == Path(pem["ca"]).read_bytes()
    assert tls.key is not None and tls.key.decode() not in repr(tls)  # the key is not printed
    assert tls.server_ssl_context() is not None


def test_tls_ca_alone_dials_tls_without_serving_it(pem: dict[str, str]) -> None:
    tls = TlsSettings.from_env({"TOCSIN_TLS_CA_FILE": pem["ca"]})
    assert tls.dials_tls and not tls.serves_tls


def test_mtls_needs_cert_key_and_ca(pem: dict[str, str]) -> None:
    both = {"TOCSIN_TLS_CERT_FILE": pem["cert"], "TOCSIN_TLS_KEY_FILE": pem["key"]}
    tls = TlsSettings.from_env(
        {**both, "TOCSIN_TLS_CA_FILE": pem["ca"], "TOCSIN_TLS_CLIENT_AUTH": "Require"}
    )
    assert tls.client_auth
    with pytest.raises(TransportError, match="CLIENT_AUTH=require needs TOCSIN_TLS_CA_FILE"):
        TlsSettings.from_env({**both, "TOCSIN_TLS_CLIENT_AUTH": "require"})
    with pytest.raises(TransportError, match="CLIENT_AUTH=require needs TOCSIN_TLS_CERT_FILE"):
        TlsSettings.from_env({"TOCSIN_TLS_CA_FILE": pem["ca"], "TOCSIN_TLS_CLIENT_AUTH": "require"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOCSIN_TLS_CERT_FILE": "cert"},
            "TOCSIN_TLS_CERT_FILE is set without TOCSIN_TLS_KEY_FILE",
        ),
        ({"TOCSIN_TLS_KEY_FILE": "key"}, "TOCSIN_TLS_KEY_FILE is set without TOCSIN_TLS_CERT_FILE"),
        (
            {"TOCSIN_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "TOCSIN_TLS_CA_FILE=/nonexistent/ca.pem: no such file",
        ),
        (
            {"TOCSIN_TLS_CLIENT_AUTH": "optional"},
            "TOCSIN_TLS_CLIENT_AUTH='optional': expected one of none, require",
        ),
    ],
)
def test_tls_errors_name_the_variable(
    pem: dict[str, str], env: dict[str, str], message: str
) -> None:
    env = {k: pem.get(v, v) for k, v in env.items()}
    with pytest.raises(TransportError, match=message.replace("(", r"\(")):
        TlsSettings.from_env(env)


def test_tls_refuses_files_that_are_not_pem_or_not_a_key(
    tmp_path: Path, pem: dict[str, str]
) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("not a certificate")
    with pytest.raises(TransportError, match=f"TOCSIN_TLS_CA_FILE={junk}: not a PEM file"):
        TlsSettings.from_env({"TOCSIN_TLS_CA_FILE": str(junk)})
    with pytest.raises(TransportError, match=r"TOCSIN_TLS_KEY_FILE=.*holds no PEM private key"):
        TlsSettings.from_env(
            {"TOCSIN_TLS_CERT_FILE": pem["cert"], "TOCSIN_TLS_KEY_FILE": pem["cert"]}
        )
    with pytest.raises(TransportError, match="a directory"):
        TlsSettings.from_env({"TOCSIN_TLS_CA_FILE": str(tmp_path)})


def test_tls_refuses_a_key_of_another_certificate_and_a_broken_ca(
    pki: Pki, pem: dict[str, str], tmp_path: Path
) -> None:
    other = pki.issue("other")
    with pytest.raises(TransportError, match="not a usable certificate and matching private key"):
        TlsSettings.from_env(
            {"TOCSIN_TLS_CERT_FILE": pem["cert"], "TOCSIN_TLS_KEY_FILE": str(other.key)}
        )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    for name in ("TOCSIN_TLS_CA_FILE", "TOCSIN_KAFKA_SSL_CA_FILE"):
        with pytest.raises(TransportError, match=f"{name}={broken}: no usable CA certificate"):
            env = {name: str(broken), "TOCSIN_KAFKA_SECURITY_PROTOCOL": "SSL"}
            TlsSettings.from_env(env) if name.startswith("TOCSIN_TLS") else KafkaSecurity.from_env(
                env
            )


# --- Kafka --------------------------------------------------------------------------------


def sasl_env(**extra: str) -> dict[str, str]:
    return {
        "TOCSIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TOCSIN_KAFKA_SASL_USERNAME": "tocsin",
        "TOCSIN_KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    }


def test_kafka_is_plaintext_without_variables() -> None:
    security = KafkaSecurity.from_env({})
    assert security.protocol == "PLAINTEXT"
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(security) is None


def test_kafka_sasl_ssl_gives_every_client_scram_and_a_verifying_context(
    pem: dict[str, str],
) -> None:
    security = KafkaSecurity.from_env(sasl_env(TOCSIN_KAFKA_SSL_CA_FILE=pem["ca"]))
    assert security.sasl_mechanism == "SCRAM-SHA-512"  # the default
    assert PASSWORD not in repr(security)
    options = security.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tocsin",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_faust_gets_the_same_credentials() -> None:
    credentials = broker_credentials(KafkaSecurity.from_env(sasl_env()))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol == AuthProtocol.SASL_SSL
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("tocsin", PASSWORD)
    ssl_only = broker_credentials(KafkaSecurity.from_env({"TOCSIN_KAFKA_SECURITY_PROTOCOL": "ssl"}))
    assert isinstance(ssl_only, faust.SSLCredentials)
    assert ssl_only.protocol == AuthProtocol.SSL


def test_faust_app_is_made_with_the_credentials(tmp_path: Path) -> None:
    from tocsin_common.faustapp import make_app

    settings = Settings.from_env("correlation", {**sasl_env(), "TOCSIN_DATA_DIR": str(tmp_path)})
    app = make_app(settings, "test-credentials")
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.username == "tocsin"


def test_kafka_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    env = sasl_env(TOCSIN_KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["TOCSIN_KAFKA_SASL_PASSWORD"]
    assert KafkaSecurity.from_env(env).password == PASSWORD


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOCSIN_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "TOCSIN_KAFKA_SECURITY_PROTOCOL='TLS': expected one of",
        ),
        (
            sasl_env(TOCSIN_KAFKA_SASL_USERNAME=""),
            "TOCSIN_KAFKA_SASL_USERNAME: required with SASL_SSL",
        ),
        (sasl_env(TOCSIN_KAFKA_SASL_PASSWORD=""), "TOCSIN_KAFKA_SASL_PASSWORD: required"),
        (
            sasl_env(TOCSIN_KAFKA_SASL_PASSWORD="change-me"),
            "TOCSIN_KAFKA_SASL_PASSWORD: a known placeholder",
        ),
        (sasl_env(TOCSIN_KAFKA_SASL_PASSWORD="short"), "TOCSIN_KAFKA_SASL_PASSWORD: 5 bytes"),
        (
            sasl_env(TOCSIN_KAFKA_SASL_MECHANISM="GSSAPI"),
            "TOCSIN_KAFKA_SASL_MECHANISM='GSSAPI': expected one of",
        ),
        (
            sasl_env(
                TOCSIN_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", TOCSIN_KAFKA_SASL_MECHANISM="PLAIN"
            ),
            "PLAIN over SASL_PLAINTEXT sends the password in clear",
        ),
        (
            {"TOCSIN_KAFKA_SASL_USERNAME": "tocsin"},
            "TOCSIN_KAFKA_SASL_\\* are set but TOCSIN_KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {"TOCSIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TOCSIN_KAFKA_SSL_CA_FILE": "ca"},
            "TOCSIN_KAFKA_SSL_CA_FILE is set but TOCSIN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
    ],
)
def test_kafka_errors_name_the_variable(
    pem: dict[str, str], env: dict[str, str], message: str
) -> None:
    env = {k: pem.get(v, v) for k, v in env.items()}
    with pytest.raises(TransportError, match=message):
        KafkaSecurity.from_env(env)


def test_kafka_sasl_plaintext_with_scram_is_allowed() -> None:
    security = KafkaSecurity.from_env(sasl_env(TOCSIN_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"))
    assert "ssl_context" not in security.client_options()
    assert security.client_options()["sasl_mechanism"] == "SCRAM-SHA-512"


# --- Redis --------------------------------------------------------------------------------


def test_redis_defaults_to_loopback_without_credentials() -> None:
    redis = RedisConnection.from_env({})
    assert redis.url == "redis://127.0.0.1:6379/0"
    assert redis.client_options() == {}


def test_rediss_with_acl_user_password_and_ca(pem: dict[str, str]) -> None:
    redis = RedisConnection.from_env(
        {
            "TOCSIN_REDIS_URL": "rediss://redis.internal:6380/2",
            "TOCSIN_REDIS_USERNAME": "tocsin",
            "TOCSIN_REDIS_PASSWORD": PASSWORD,
            "TOCSIN_REDIS_CA_FILE": pem["ca"],
        }
    )
    assert redis.uses_tls and PASSWORD not in repr(redis)
    options = redis.client_options()
    assert options["username"] == "tocsin" and options["password"] == PASSWORD
    assert options["ssl_ca_certs"] == pem["ca"]
    assert options["ssl_cert_reqs"] == "required" and options["ssl_check_hostname"] is True


def test_redis_user_in_the_url_is_taken_apart_from_it() -> None:
    redis = RedisConnection.from_env(
        {"TOCSIN_REDIS_URL": "rediss://tocsin@redis:6380/0", "TOCSIN_REDIS_PASSWORD": PASSWORD}
    )
    assert redis.url == "rediss://redis:6380/0" and redis.username == "tocsin"


def test_settings_carry_the_transport_settings() -> None:
    settings = Settings.from_env(
        "escalation",
        {
            "TOCSIN_REDIS_URL": "rediss://redis:6380/0",
            "TOCSIN_REDIS_PASSWORD": PASSWORD,
            **sasl_env(),
        },
    )
    assert settings.redis_url == "rediss://redis:6380/0" and settings.redis.password == PASSWORD
    assert settings.kafka_security.protocol == "SASL_SSL"
    assert not settings.tls.serves_tls


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOCSIN_REDIS_URL": "redis://:hunter2@redis:6379/0"},
            "TOCSIN_REDIS_URL carries a password",
        ),
        ({"TOCSIN_REDIS_URL": "http://redis:6379"}, "TOCSIN_REDIS_URL: scheme 'http'"),
        (
            {"TOCSIN_REDIS_CA_FILE": "ca"},
            "TOCSIN_REDIS_CA_FILE is set but TOCSIN_REDIS_URL is redis://",
        ),
        (
            {"TOCSIN_REDIS_USERNAME": "tocsin"},
            "TOCSIN_REDIS_USERNAME is set without TOCSIN_REDIS_PASSWORD",
        ),
        ({"TOCSIN_REDIS_PASSWORD": "changeme"}, "TOCSIN_REDIS_PASSWORD: a known placeholder"),
        (
            {"TOCSIN_REDIS_URL": "rediss://r:1/0", "TOCSIN_REDIS_CERT_FILE": "cert"},
            "TOCSIN_REDIS_CERT_FILE and TOCSIN_REDIS_KEY_FILE go together",
        ),
    ],
)
def test_redis_errors_name_the_variable(
    pem: dict[str, str], env: dict[str, str], message: str
) -> None:
    env = {k: pem.get(v, v) for k, v in env.items()}
    with pytest.raises(TransportError, match=message):
        RedisConnection.from_env(env)


# --- PostgreSQL (insight) -------------------------------------------------------------------


def test_postgres_defaults_to_the_local_stack_without_a_password() -> None:
    pg = PostgresConnection.from_env({})
    assert pg.url == "postgresql://tocsin@127.0.0.1:5433/tocsin"
    assert pg.client_options() == {"sslmode": "prefer"} and not pg.uses_tls


def test_postgres_verified_tls_with_a_password_secret_and_a_ca(pem: dict[str, str]) -> None:
    pg = PostgresConnection.from_env(
        {
            "TOCSIN_POSTGRES_URL": "postgresql://tocsin@pg.internal:5432/insight",
            "TOCSIN_POSTGRES_PASSWORD": PASSWORD,
            "TOCSIN_POSTGRES_SSLMODE": "verify-full",
            "TOCSIN_POSTGRES_CA_FILE": pem["ca"],
        }
    )
    assert pg.uses_tls and PASSWORD not in repr(pg) and PASSWORD not in pg.display
    assert pg.client_options() == {
        "sslmode": "verify-full",
        "password": PASSWORD,
        "sslrootcert": pem["ca"],
    }
    # Verified without a CA file: against the system's roots, as Kafka and Redis are.
    system = PostgresConnection.from_env({"TOCSIN_POSTGRES_SSLMODE": "verify-ca"})
    assert system.client_options()["sslrootcert"] == "system"


def test_settings_carry_the_postgres_connection() -> None:
    settings = Settings.from_env(
        "insight", {"TOCSIN_POSTGRES_URL": "postgresql://tocsin@pg:5432/tocsin"}
    )
    assert settings.postgres.url == "postgresql://tocsin@pg:5432/tocsin"
    assert settings.grpc_port == 50056


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TOCSIN_POSTGRES_URL": "postgresql://tocsin:hunter2@pg:5432/tocsin"},
            "TOCSIN_POSTGRES_URL carries a password",
        ),
        ({"TOCSIN_POSTGRES_URL": "mysql://pg/x"}, "TOCSIN_POSTGRES_URL: scheme 'mysql'"),
        ({"TOCSIN_POSTGRES_URL": "postgresql://pg:5432"}, "expected postgresql://USER@HOST"),
        ({"TOCSIN_POSTGRES_SSLMODE": "allow-all"}, "TOCSIN_POSTGRES_SSLMODE='allow-all'"),
        (
            {"TOCSIN_POSTGRES_CA_FILE": "ca"},
            "TOCSIN_POSTGRES_CA_FILE is set but TOCSIN_POSTGRES_SSLMODE=prefer",
        ),
        ({"TOCSIN_POSTGRES_PASSWORD": "changeme"}, "TOCSIN_POSTGRES_PASSWORD: a known placeholder"),
    ],
)
def test_postgres_errors_name_the_variable(
    pem: dict[str, str], env: dict[str, str], message: str
) -> None:
    env = {k: pem.get(v, v) for k, v in env.items()}
    with pytest.raises(TransportError, match=message):
        PostgresConnection.from_env(env)
