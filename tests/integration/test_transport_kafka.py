"""Kafka over SASL_SSL with SCRAM-SHA-512, against a real broker configured only that way
(started by this module, stopped after it): tocsin_common's producer, consumer and admin
calls, and a faust worker from tocsin_common.faustapp, all configured from the
TOCSIN_KAFKA_* variables the services read. Plaintext and a wrong password are refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from tocsin_common.kafka import EventProducer, ensure_topics, group_consumer, wait_for_kafka
from tocsin_common.secrets import generate_secret
from tocsin_common.topics import Topic
from tocsin_common.transport import KafkaSecurity

from tests.integration.secure_infra import SecureKafka, start_sasl_ssl_kafka
from tests.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 20


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    workdir = tmp_path_factory.mktemp("sasl-ssl-kafka")
    broker = start_sasl_ssl_kafka(workdir, make_pki(workdir / "pki"))
    try:
        yield broker
    finally:
        broker.broker.stop()


def security_env(kafka: SecureKafka, password: str | None = None) -> dict[str, str]:
    return {
        "TOCSIN_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "TOCSIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TOCSIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TOCSIN_KAFKA_SASL_USERNAME": kafka.username,
        "TOCSIN_KAFKA_SASL_PASSWORD": password or kafka.password,
        "TOCSIN_KAFKA_SSL_CA_FILE": str(kafka.ca_file),
    }


def topics(prefix: str) -> tuple[Topic, Topic]:
    suffix = uuid.uuid4().hex[:8]
    return (
        Topic(f"test.{prefix}.in.{suffix}", 2, "test input", "bytes"),
        Topic(f"test.{prefix}.out.{suffix}", 2, "test output", "bytes"),
    )


async def consume(
    kafka: SecureKafka, security: KafkaSecurity, topic: Topic, count: int
) -> dict[bytes, bytes]:
    consumer = group_consumer(kafka.bootstrap, f"test-{uuid.uuid4().hex[:8]}", "test", security)
    await consumer.start()
    consumer.subscribe([topic.name])
    got: dict[bytes, bytes] = {}
    try:
        async with asyncio.timeout(90):
            while len(got) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.update({r.key: r.value for r in records if r.key and r.value})
    finally:
        await consumer.stop()
    return got


async def test_tocsin_clients_produce_and_consume_over_sasl_ssl(kafka: SecureKafka) -> None:
    security = KafkaSecurity.from_env(security_env(kafka))
    await wait_for_kafka(kafka.bootstrap, timeout_s=30, security=security)
    source, _ = topics("sasl")
    await ensure_topics(kafka.bootstrap, [source], security)
    producer = EventProducer(kafka.bootstrap, "transport-test", security=security)
    await producer.start()
    try:
        for n in range(RECORDS):
            await producer.send(source, f"k{n}", f"v{n}".encode())
    finally:
        await producer.stop()
    got = await consume(kafka, security, source, RECORDS)
    assert got == {f"k{n}".encode(): f"v{n}".encode() for n in range(RECORDS)}


async def test_faust_app_from_faustapp_streams_over_sasl_ssl(
    kafka: SecureKafka, tmp_path: Path
) -> None:
    security = KafkaSecurity.from_env(security_env(kafka))
    source, sink = topics("faust")
    await ensure_topics(kafka.bootstrap, [source, sink], security)
    env = {
        **os.environ,
        **security_env(kafka),
        "TOCSIN_DATA_DIR": str(tmp_path / "faust"),
        "ECHO_APP_ID": f"test-echo-{uuid.uuid4().hex[:8]}",
        "ECHO_IN": source.name,
        "ECHO_OUT": sink.name,
    }
    log = tmp_path / "faust.log"
    with open(log, "wb") as out:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.faust_echo",
            "worker",
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        producer = EventProducer(kafka.bootstrap, "transport-test", security=security)
        await producer.start()
        try:
            for n in range(RECORDS):
                await producer.send(source, f"k{n}", f"v{n}".encode())
        finally:
            await producer.stop()
        try:
            got = await consume(kafka, security, sink, RECORDS)
        except TimeoutError:
            pytest.fail(f"the faust worker echoed nothing in time:\n{log.read_text()[-3000:]}")
        assert got == {f"k{n}".encode(): f"echo:v{n}".encode() for n in range(RECORDS)}
        assert worker.returncode is None, log.read_text()[-3000:]
    finally:
        if worker.returncode is None:
            worker.terminate()
        try:
            await asyncio.wait_for(worker.wait(), 20)
        except TimeoutError:
            worker.kill()
            await worker.wait()


async def test_plaintext_and_a_wrong_password_are_refused(
    kafka: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises((KafkaError, TimeoutError)):
        await asyncio.wait_for(
            wait_for_kafka(kafka.bootstrap, timeout_s=3, security=KafkaSecurity()), 20
        )
    wrong = KafkaSecurity.from_env(security_env(kafka, password=generate_secret()))
    producer = EventProducer(kafka.bootstrap, "transport-test", security=wrong)
    caplog.clear()
    try:
        with pytest.raises(KafkaError):  # aiokafka reports it as unable to bootstrap...
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()
    # ... having logged why: the broker refused the credentials.
    assert "SaslAuthenticationFailed" in caplog.text


async def test_tocsin_admin_speaks_sasl_ssl(kafka: SecureKafka, tmp_path: Path) -> None:
    """`tocsin admin` (kafka-python, not aiokafka) reads the same TOCSIN_KAFKA_* settings."""
    from tocsin_common.settings import kafka_partitions
    from tocsin_common.topics import ALL_TOPICS

    security = KafkaSecurity.from_env(security_env(kafka))
    # With the partitions `tocsin admin topics` expects (TOCSIN_KAFKA_PARTITIONS, as here).
    await ensure_topics(kafka.bootstrap, ALL_TOPICS, security, kafka_partitions())
    tocsin = str(Path(sys.executable).parent / "tocsin")
    env = {**os.environ, **security_env(kafka)}
    checked = await asyncio.to_thread(
        subprocess.run, [tocsin, "admin", "topics"], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert all(line.split()[-1] == "ok" for line in checked.stdout.splitlines()[2:])
    wrong = {**env, "TOCSIN_KAFKA_SASL_PASSWORD": generate_secret()}
    refused = await asyncio.to_thread(
        subprocess.run,
        [tocsin, "admin", "topics", "--kafka-timeout", "5"],
        env=wrong,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 6, refused.stderr  # docs/cli.md: unreachable
    assert f"or it refused the SASL login of user {kafka.username!r}" in refused.stderr
