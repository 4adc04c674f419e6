"""A Kafka broker that only speaks SASL_SSL with SCRAM-SHA-512, and a Redis that only
speaks TLS to ACL users: each started by a test module for itself and stopped after it.

Ports sit 100 above the devstack profile's own Kafka and Redis ports (TOCSIN_DEVSTACK_PROFILE,
`test` for `make test`), so stacks of different profiles can run these side by side. The
processes are recorded in the profile's .run/<profile>/pids like the rest of the stack, so
`devstack.py down` stops them too if a test run is killed before its teardown.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tocsin_common.secrets import generate_secret

from tests.pki import Pki
from tools import devstack

PORT_OFFSET = 100


def profile() -> devstack.Profile:
    return devstack.PROFILES[os.environ.get("TOCSIN_DEVSTACK_PROFILE", "test")]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(
    port: int, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(
        f"{what} did not open port {port} in {timeout:.0f}s:\n{log.read_text()[-3000:]}"
    )


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    pidfile: Path

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.pidfile.unlink(missing_ok=True)


def _spawn(name: str, argv: list[str]) -> Running:
    stack = profile()
    proc = devstack.spawn(stack, name, argv)  # its own process group; pid in .run/<profile>
    return Running(name, proc, stack.run_dir / "pids" / f"{name}.pid")


# ---------------------------------------------------------------------------------------------
# Kafka: SASL_SSL + SCRAM-SHA-512
# ---------------------------------------------------------------------------------------------


@dataclass
class SecureKafka:
    bootstrap: str
    ca_file: Path
    username: str
    password: str
    broker: Running


def start_sasl_ssl_kafka(workdir: Path, pki: Pki) -> SecureKafka:
    """A single KRaft node whose only client listener is SASL_SSL (SCRAM-SHA-512, the
    broker's PEM certificate signed by ``pki``), with two SCRAM users made at format time:
    the broker's own (inter-broker) and ``tocsin``."""
    stack = profile()
    port, controller = stack.kafka_port + PORT_OFFSET, stack.controller_port + PORT_OFFSET
    for p in (port, controller):
        if _port_open(p):
            raise RuntimeError(f"port {p} is taken: is another SASL_SSL test broker running?")
    devstack.ensure_kafka_jars()
    issued = pki.issue("kafka-broker")
    keystore = workdir / "broker-keystore.pem"  # PEM keystore: private key, then certificate
    keystore.write_bytes(issued.key.read_bytes() + issued.cert.read_bytes())
    broker_password, password = generate_secret(), generate_secret()
    data = workdir / "data"
    props = workdir / "server.properties"
    props.write_text(
        f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\\
  org.apache.kafka.common.security.scram.ScramLoginModule required \\
  username="broker" password="{broker_password}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={pki.ca.cert}
ssl.client.auth=none
log.dirs={data}
num.partitions=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""
    )
    logs = workdir / "logs"
    jvm = [
        devstack.java(),
        "-Xms128m",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # a short-lived broker: start fast rather than run fast
        "-cp",
        f"{devstack.KAFKA_LIBS}/*",
        f"-Dlog4j2.configurationFile={devstack.KAFKA_DIR / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={logs}",
    ]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    formatted = subprocess.run(
        [
            *jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
            "--add-scram", f"SCRAM-SHA-512=[name=broker,password={broker_password}]",
            "--add-scram", f"SCRAM-SHA-512=[name=tocsin,password={password}]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if formatted.returncode != 0:
        raise RuntimeError(f"kafka-storage format failed:\n{formatted.stdout}\n{formatted.stderr}")
    name = "kafka-sasl-ssl"
    broker = _spawn(name, [*jvm, "kafka.Kafka", str(props)])
    log = stack.run_dir / "logs" / f"{name}.log"
    try:
        _wait_port(port, "SASL_SSL kafka", broker.proc, log, 90)
    except BaseException:
        broker.stop()
        raise
    return SecureKafka(f"127.0.0.1:{port}", pki.ca.cert, "tocsin", password, broker)


# ---------------------------------------------------------------------------------------------
# Redis: TLS only, ACL users only
# ---------------------------------------------------------------------------------------------


@dataclass
class SecureRedis:
    port: int
    ca_file: Path
    username: str
    password: str
    server: Running


def start_tls_acl_redis(workdir: Path, pki: Pki) -> SecureRedis:
    """redis-server with no plaintext port (``port 0``), TLS on its own port with a
    certificate signed by ``pki``, the default user off and one ACL user ``tocsin``."""
    stack = profile()
    port = stack.redis_port + PORT_OFFSET
    if _port_open(port):
        raise RuntimeError(f"port {port} is taken: is another TLS test Redis running?")
    issued = pki.issue("redis")
    password = generate_secret()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "redis.conf"
    conf.write_text(
        f"""port 0
tls-port {port}
bind 127.0.0.1
tls-cert-file {issued.cert}
tls-key-file {issued.key}
tls-ca-cert-file {pki.ca.cert}
tls-auth-clients no
dir {workdir}
save ""
appendonly yes
appendfsync always
user default off
user tocsin on >{password} ~tocsin:* +@read +@write +@connection +acl|whoami +config|get
"""
    )
    conf.chmod(0o600)
    name = "redis-tls"
    server = _spawn(name, [devstack.ensure_redis(), str(conf)])
    log = stack.run_dir / "logs" / f"{name}.log"
    try:
        _wait_port(port, "TLS redis", server.proc, log, 20)
    except BaseException:
        server.stop()
        raise
    return SecureRedis(port, pki.ca.cert, "tocsin", password, server)
