"""Redis over TLS as an ACL user, against a real redis-server that has no plaintext port
and no default user (started by this module): the client the services get from
tocsin_common.redisclient, configured from TOCSIN_REDIS_* as theirs is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError
from tocsin_common.redis_durability import check_redis_durability
from tocsin_common.redisclient import blocking_redis_client, redis_client
from tocsin_common.secrets import generate_secret
from tocsin_common.transport import RedisConnection

from tests.integration.secure_infra import SecureRedis, start_tls_acl_redis
from tests.pki import make_pki


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    workdir = tmp_path_factory.mktemp("tls-redis")
    server = start_tls_acl_redis(workdir / "data", make_pki(workdir / "pki"))
    try:
        yield server
    finally:
        server.server.stop()


def connection(redis: SecureRedis, **overrides: str) -> RedisConnection:
    env = {
        "TOCSIN_REDIS_URL": f"rediss://localhost:{redis.port}/0",
        "TOCSIN_REDIS_USERNAME": redis.username,
        "TOCSIN_REDIS_PASSWORD": redis.password,
        "TOCSIN_REDIS_CA_FILE": str(redis.ca_file),
    }
    env.update(overrides)
    return RedisConnection.from_env({k: v for k, v in env.items() if v})


async def test_helper_client_talks_tls_as_the_acl_user(redis_tls: SecureRedis) -> None:
    client = redis_client(connection(redis_tls))
    try:
        assert await client.ping()
        await client.set("tocsin:transport-test", b"over tls")
        assert await client.get("tocsin:transport-test") == b"over tls"
        assert await client.acl_whoami() == "tocsin"
        # The ACL holds: keys outside the user's pattern are refused.
        with pytest.raises(NoPermissionError):
            await client.get("elsewhere:key")
    finally:
        await client.aclose()
    pooled = blocking_redis_client(connection(redis_tls), max_connections=4, timeout=5)
    try:
        assert await pooled.get("tocsin:transport-test") == b"over tls"
        # The start-up durability check needs no more than +config|get of this user.
        assert await check_redis_durability(pooled, "notification", "test", {}) is None
    finally:
        await pooled.aclose()


async def test_wrong_password_plaintext_and_unknown_ca_are_refused(
    redis_tls: SecureRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    wrong = redis_client(connection(redis_tls, TOCSIN_REDIS_PASSWORD=generate_secret()))
    with pytest.raises(AuthenticationError):
        await wrong.ping()
    await wrong.aclose()

    plaintext = redis_client(
        connection(
            redis_tls,
            TOCSIN_REDIS_URL=f"redis://localhost:{redis_tls.port}/0",
            TOCSIN_REDIS_CA_FILE="",
        )
    )
    with pytest.raises(ConnectionError):
        await plaintext.ping()
    await plaintext.aclose()

    other_ca = make_pki(tmp_path_factory.mktemp("other-pki"), "someone-elses-ca").ca.cert
    untrusted = redis_client(connection(redis_tls, TOCSIN_REDIS_CA_FILE=str(other_ca)))
    with pytest.raises(ConnectionError, match=r"(?i)certificate"):
        await untrusted.ping()
    await untrusted.aclose()
