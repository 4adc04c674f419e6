"""Local stack without Docker: real Apache Kafka (KRaft), Redis and PostgreSQL, then Tocsin's
services.

    python tools/devstack.py infra-up   --profile test   # Kafka + Redis + Postgres + topics
    python tools/devstack.py up         --profile dev    # infra + the six services
    python tools/devstack.py down       --profile dev    # stops what `up` started, by pid
    python tools/devstack.py status     --profile dev

Each profile has its own ports and run folder (.run/<profile>), so `make test` can run
while `make up` is running. Kafka's jars come from Maven Central through the machine's
Maven (fetched once into .cache/kafka), Redis from Debian's redis-server package, PostgreSQL
from Debian's postgresql package (run as the `postgres` user when this runs as root: it
refuses to run as root).
Only the Python standard library is used here: this runs before the venv exists too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
KAFKA_DIR = ROOT / "deploy" / "local" / "kafka"
KAFKA_LIBS = CACHE / "kafka" / "libs"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Profile:
    name: str
    kafka_port: int
    controller_port: int
    redis_port: int
    # Service ports: (grpc, metrics, http or 0)
    ingest: tuple[int, int, int]
    correlation: tuple[int, int, int]
    escalation: tuple[int, int, int]
    notification: tuple[int, int, int]
    recorder_port: int
    postgres_port: int
    insight: tuple[int, int, int]
    # The REST API (its gRPC port serves grpc.health.v1 only)
    api: tuple[int, int, int] = (50055, 9105, 8082)
    # TOCSIN_KAFKA_PARTITIONS of its topics and services (None: the services' default, 48).
    # The caller's own TOCSIN_KAFKA_PARTITIONS wins over it.
    partitions: int | None = None

    @property
    def run_dir(self) -> Path:
        return ROOT / ".run" / self.name

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def partition_env(self) -> dict[str, str]:
        """TOCSIN_KAFKA_PARTITIONS as this profile's topics and services use it."""
        chosen = os.environ.get("TOCSIN_KAFKA_PARTITIONS") or (
            str(self.partitions) if self.partitions is not None else ""
        )
        return {"TOCSIN_KAFKA_PARTITIONS": chosen} if chosen else {}

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def postgres_url(self) -> str:
        """No password in it: the services read TOCSIN_POSTGRES_PASSWORD_FILE."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.postgres_port}/{PG_DATABASE}"


# The test profiles' partitions per pipeline topic; dev and bench have the default (48).
TEST_PARTITIONS = 12

PROFILES = {
    "dev": Profile(
        "dev",
        9092,
        9093,
        6379,
        ingest=(50051, 9101, 8080),
        correlation=(50052, 9102, 0),
        escalation=(50053, 9103, 0),
        notification=(50054, 9104, 8081),
        recorder_port=9999,
        postgres_port=5433,  # beside a Postgres the machine may run on 5432
        insight=(50056, 9106, 0),
    ),
    "test": Profile(
        "test",
        19092,
        19093,
        16379,
        ingest=(19051, 19101, 18080),
        correlation=(19052, 19102, 0),
        escalation=(19053, 19103, 0),
        notification=(19054, 19104, 18081),
        recorder_port=19999,
        api=(19055, 19105, 18082),
        postgres_port=19432,
        insight=(19056, 19106, 0),
        # The suites restart services and consumer groups hundreds of times: fewer
        # partitions keep that quick (docs/deployment.md#partitions).
        partitions=TEST_PARTITIONS,
    ),
    "bench": Profile(
        "bench",
        29092,
        29093,
        26379,
        ingest=(29051, 29101, 28080),
        correlation=(29052, 29102, 0),
        escalation=(29053, 29103, 0),
        notification=(29054, 29104, 28081),
        recorder_port=29999,
        api=(29055, 29105, 28082),
        postgres_port=29432,
        insight=(29056, 29106, 0),
    ),
}


# Extra isolated stacks (h1..h8) for engineers running suites side by side on one machine,
# each in a block of 1000 ports at the same offsets. Below Linux's ephemeral range
# (32768+): a client's outgoing connection can hold a port there, and the broker then
# fails to bind it.
def _isolated(name: str, base: int) -> Profile:
    return Profile(
        name,
        base + 92,
        base + 93,
        base + 79,
        ingest=(base + 51, base + 101, base + 80),
        correlation=(base + 52, base + 102, 0),
        escalation=(base + 53, base + 103, 0),
        notification=(base + 54, base + 104, base + 81),
        recorder_port=base + 99,
        api=(base + 55, base + 105, base + 82),
        postgres_port=base + 32,
        insight=(base + 56, base + 106, 0),
        partitions=TEST_PARTITIONS,
    )


for _n in range(1, 7):
    PROFILES[f"h{_n}"] = _isolated(f"h{_n}", 11000 + _n * 1000)
# h7 and h8 take the 10000 and 20000 blocks: 11000 + 7 * 1000 would meet the test
# profile's 18080..18082, and 19000 is the test profile's.
PROFILES["h7"] = _isolated("h7", 10000)
PROFILES["h8"] = _isolated("h8", 20000)


def say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


# --- installation ---------------------------------------------------------------------


def ensure_kafka_jars() -> None:
    marker = CACHE / "kafka" / "fetched.json"
    pom = KAFKA_DIR / "pom.xml"
    pom_text = pom.read_text()
    if marker.exists() and json.loads(marker.read_text()).get("pom") == pom_text:
        return
    if shutil.which("mvn") is None:
        sys.exit("devstack: Maven (mvn) is needed to fetch the Kafka broker jars")
    say("fetching Apache Kafka broker jars from Maven Central (once)")
    if KAFKA_LIBS.exists():
        shutil.rmtree(KAFKA_LIBS)
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            f"-DoutputDirectory={KAFKA_LIBS}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    marker.write_text(json.dumps({"pom": pom_text}))


def ensure_chromium() -> str:
    """Debian's chromium and chromium-driver (the same version, so Selenium finds the driver
    on PATH): the console's browser tests and `make screenshots` drive them."""
    found = shutil.which("chromedriver")
    if found and shutil.which("chromium"):
        return found
    say("installing Debian's chromium and chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ],
        check=True,
        env=env,
    )
    found = shutil.which("chromedriver")
    if not found:
        sys.exit("devstack: chromedriver still missing after apt-get install")
    return found


def ensure_redis() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    say("installing Debian's redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        check=True,
        env=env,
    )
    # The package starts a system-wide instance on 6379; `make up` wants that port for
    # itself, and the tests need nothing but their own.
    subprocess.run(["service", "redis-server", "stop"], check=False, capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        sys.exit("devstack: redis-server still missing after apt-get install")
    return found


PG_USER = "tocsin"
PG_DATABASE = "tocsin"
PG_BIN = Path("/usr/lib/postgresql")


def ensure_postgres() -> Path:
    """The directory of Debian's PostgreSQL server binaries (initdb, postgres, createdb),
    installing the `postgresql` package when none is there."""
    found = _postgres_bin()
    if found:
        return found
    say("installing Debian's postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        check=True,
        env=env,
    )
    # The package starts a system-wide cluster; the stacks run their own.
    subprocess.run(["service", "postgresql", "stop"], check=False, capture_output=True)
    found = _postgres_bin()
    if not found:
        sys.exit("devstack: PostgreSQL's initdb still missing after apt-get install")
    return found


def _postgres_bin() -> Path | None:
    versions = sorted(
        (p for p in PG_BIN.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as `postgres`."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
        # The `postgres` user must reach it: a checkout under a directory only root may
        # enter (`mktemp -d` makes them 0700) would fail initdb. Let others pass through
        # (search only, not list) every directory above it that forbids that.
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        sys.exit("devstack: Java 17 is needed for the Kafka broker")
    return found


# --- processes ------------------------------------------------------------------------


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(
    port: int,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            sys.exit(f"devstack: {what} exited with {proc.returncode}\n{tail}")
        time.sleep(0.2)
    sys.exit(f"devstack: {what} did not open port {port} within {timeout:.0f}s")


def spawn(
    profile: Profile,
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    logs = profile.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env or os.environ.copy(),
        start_new_session=True,  # its own process group: `down` stops it and its children
    )
    (profile.run_dir / "pids").mkdir(parents=True, exist_ok=True)
    (profile.run_dir / "pids" / f"{name}.pid").write_text(str(proc.pid))
    return proc


def start_redis(profile: Profile) -> None:
    if port_open(profile.redis_port):
        sys.exit(f"devstack: port {profile.redis_port} is taken; is another stack running?")
    server = ensure_redis()
    data = profile.run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        profile,
        "redis",
        [
            server,
            "--port",
            str(profile.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            # Every write is on disk before Redis answers: idempotency keys and timers must
            # survive a SIGKILL of Redis (the failure suite does exactly that).
            "always",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ],
    )
    wait_port(profile.redis_port, "redis-server", 20, proc, profile.run_dir / "logs" / "redis.log")
    say(f"redis on 127.0.0.1:{profile.redis_port}")


def start_postgres(profile: Profile, fresh: bool) -> None:
    """The profile's own PostgreSQL cluster under .run/<profile>/postgres, on its port,
    password-authenticated (the password is a generated secret of the profile), with a
    `tocsin` database. --fresh starts from an empty cluster: the offsets insight keeps
    there belong to the Kafka data that --fresh wipes too."""
    if port_open(profile.postgres_port):
        sys.exit(f"devstack: port {profile.postgres_port} is taken; is another stack running?")
    bindir = ensure_postgres()
    pg = profile.run_dir / "postgres"
    data = pg / "data"
    if fresh and pg.exists():
        shutil.rmtree(pg)
    pg.mkdir(parents=True, exist_ok=True)
    _give_to_postgres(pg)
    password = secret_file(profile, "postgres-password").read_text().strip()
    created = not (data / "PG_VERSION").exists()
    if created:
        pwfile = pg / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        _give_to_postgres(pwfile)
        try:
            subprocess.run(
                [
                    *_as_postgres(),
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
    proc = spawn(
        profile,
        "postgres",
        [
            *_as_postgres(),
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(profile.postgres_port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={pg}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ],
    )
    log = profile.run_dir / "logs" / "postgres.log"
    wait_port(profile.postgres_port, "postgres", 60, proc, log)
    deadline = time.monotonic() + 60  # the port opens before recovery ends
    while (
        subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(profile.postgres_port)],
            check=False,
        ).returncode
        != 0
    ):
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit(f"devstack: postgres not ready\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    if created:
        subprocess.run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(profile.postgres_port),
                "-U",
                PG_USER,
                PG_DATABASE,
            ],
            check=True,
            env={**os.environ, "PGPASSWORD": password},
        )
    say(f"postgres on 127.0.0.1:{profile.postgres_port} (database {PG_DATABASE})")


def start_kafka(profile: Profile, fresh: bool) -> None:
    if port_open(profile.kafka_port):
        sys.exit(f"devstack: port {profile.kafka_port} is taken; is another stack running?")
    ensure_kafka_jars()
    kdir = profile.run_dir / "kafka"
    data = kdir / "data"
    if fresh and kdir.exists():
        shutil.rmtree(kdir)
    kdir.mkdir(parents=True, exist_ok=True)
    props = kdir / "server.properties"
    props.write_text(
        (KAFKA_DIR / "server.properties.template")
        .read_text()
        .replace("{kafka_port}", str(profile.kafka_port))
        .replace("{controller_port}", str(profile.controller_port))
        .replace("{log_dir}", str(data))
    )
    classpath = f"{KAFKA_LIBS}/*"
    jvm = [
        java(),
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-cp",
        classpath,
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={kdir / 'logs'}",
    ]
    if not (data / "meta.properties").exists():
        cluster_id = str(uuid.uuid4())  # any 16-byte id; StorageTool takes base64 or uuid form
        cluster_id = (
            subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            check=True,
            capture_output=True,
        )
    proc = spawn(profile, "kafka", [*jvm, "kafka.Kafka", str(props)])
    wait_port(profile.kafka_port, "kafka", 90, proc, profile.run_dir / "logs" / "kafka.log")
    say(f"kafka (KRaft) on {profile.bootstrap}")


def create_topics(profile: Profile) -> None:
    # The topic registry lives in libs/common; the venv has its dependencies.
    code = (
        "import asyncio, sys\n"
        "from tocsin_common.kafka import ensure_topics, wait_for_kafka\n"
        "from tocsin_common.settings import kafka_partitions\n"
        "async def main():\n"
        f"    await wait_for_kafka({profile.bootstrap!r})\n"
        f"    await ensure_topics({profile.bootstrap!r}, partitions=kafka_partitions())\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, **profile.partition_env}
    subprocess.run([str(VENV_PYTHON), "-c", code], check=True, cwd=ROOT, env=env)
    say(f"topics created ({env.get('TOCSIN_KAFKA_PARTITIONS', 'default')} partitions)")


def secret_file(profile: Profile, name: str) -> Path:
    """A random secret generated once per profile under .run/<profile>/secrets/ (0600) and
    kept across restarts, so links and signatures made before a restart still verify. The
    services read it through <NAME>_FILE; nothing in the repository holds a usable value.
    Same recipe as tocsin_common.secrets.generate_secret (this file runs without the venv)."""
    path = profile.run_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path


def admin_token_file(profile: Profile) -> Path:
    return profile.run_dir / "secrets" / "admin-token"


def bootstrap_admin(profile: Profile) -> None:
    """The bootstrap admin token (printed once, when new; kept in .run/<profile>/secrets)."""
    subprocess.run(
        [
            str(VENV_PYTHON),
            "-m",
            "tocsin_common.auth",
            "bootstrap",
            "--out",
            str(admin_token_file(profile)),
            "--redis-url",
            profile.redis_url,
        ],
        check=True,
        cwd=ROOT,
    )


def heartbeat_urls_dir(profile: Profile) -> Path:
    return profile.run_dir / "secrets" / "heartbeats"


def issue_heartbeat_urls(profile: Profile) -> None:
    """A ping URL for every heartbeat of the config, issued once with the admin token and
    kept in .run/<profile>/secrets/heartbeats/<id>.url (0600); a restart keeps them."""
    subprocess.run(
        [
            str(VENV_PYTHON),
            "-m",
            "tocsin_ingest.issue_ping_url",
            "--all",
            "--keep-existing",
            "--target",
            f"127.0.0.1:{profile.ingest[0]}",
            "--token-file",
            str(admin_token_file(profile)),
            "--out-dir",
            str(heartbeat_urls_dir(profile)),
        ],
        check=True,
        cwd=ROOT,
    )


# The link key ring (or lone link secret): one of these must reach notification.
LINK_KEY_VARS = (
    "TOCSIN_LINK_KEYS",
    "TOCSIN_LINK_KEYS_FILE",
    "TOCSIN_LINK_SECRET",
    "TOCSIN_LINK_SECRET_FILE",
)


def service_env(
    profile: Profile, service: str, ports: tuple[int, int, int], config: Path
) -> dict[str, str]:
    grpc_port, metrics_port, http_port = ports
    env = os.environ.copy()
    env.update(
        {
            "TOCSIN_KAFKA_BOOTSTRAP": profile.bootstrap,
            "TOCSIN_REDIS_URL": profile.redis_url,
            "TOCSIN_CONFIG": str(config),
            "TOCSIN_METRICS_PORT": str(metrics_port),
            "TOCSIN_ESCALATION_GRPC": f"127.0.0.1:{profile.escalation[0]}",
            # Where the api reaches the others (and calendar feed URLs start)
            "TOCSIN_CORRELATION_GRPC": f"127.0.0.1:{profile.correlation[0]}",
            "TOCSIN_NOTIFICATION_GRPC": f"127.0.0.1:{profile.notification[0]}",
            "TOCSIN_INGEST_GRPC": f"127.0.0.1:{profile.ingest[0]}",
            "TOCSIN_INSIGHT_GRPC": f"127.0.0.1:{profile.insight[0]}",
            "TOCSIN_API_PUBLIC_URL": f"http://127.0.0.1:{profile.api[2]}",
            "TOCSIN_PUBLIC_URL": f"http://127.0.0.1:{profile.notification[2]}",
            "TOCSIN_DATA_DIR": str(profile.run_dir / "data" / service),
            "TOCSIN_SERVICE_SECRET_FILE": str(secret_file(profile, "service-secret")),
            "TOCSIN_POSTGRES_URL": profile.postgres_url,
            "TOCSIN_POSTGRES_PASSWORD_FILE": str(secret_file(profile, "postgres-password")),
            "OTEL_SERVICE_NAME": f"tocsin-{service}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": os.environ.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{profile.recorder_port + 1}"
            ),
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            **profile.partition_env,
        }
    )
    env["TOCSIN_GRPC_PORT"] = str(grpc_port)
    if http_port:
        env["TOCSIN_HTTP_PORT"] = str(http_port)
    if not any(os.environ.get(name) for name in LINK_KEY_VARS):  # yours, when you set one
        env["TOCSIN_LINK_SECRET_FILE"] = str(secret_file(profile, "link-secret"))
    # Webhook pages are signed: a generated secret unless the caller brought one.
    if not env.get("TOCSIN_WEBHOOK_SECRET") and not env.get("TOCSIN_WEBHOOK_SECRET_FILE"):
        env["TOCSIN_WEBHOOK_SECRET_FILE"] = str(secret_file(profile, "TOCSIN_WEBHOOK_SECRET"))
    return env


SERVICES = {
    "alert-ingest": "tocsin_ingest",
    "correlation": "tocsin_correlation",
    "escalation": "tocsin_escalation",
    "notification": "tocsin_notification",
    "api": "tocsin_api",
    "insight": "tocsin_insight",
}


def start_services(profile: Profile, config: Path) -> None:
    ports = {
        "alert-ingest": profile.ingest,
        "correlation": profile.correlation,
        "escalation": profile.escalation,
        "notification": profile.notification,
        "api": profile.api,
        "insight": profile.insight,
    }
    # A recording peer for pages (webhooks) and traces (OTLP), so a newcomer sees both.
    spawn(
        profile,
        "recorder",
        [
            str(VENV_PYTHON),
            "-m",
            "tools.recorder",
            "--http-port",
            str(profile.recorder_port),
            "--otlp-port",
            str(profile.recorder_port + 1),
            "--out",
            str(profile.run_dir / "recorded"),
        ],
    )
    wait_port(profile.recorder_port, "recorder", 20)
    procs = {}
    for service, module in SERVICES.items():
        procs[service] = spawn(
            profile,
            service,
            [str(VENV_PYTHON), "-m", module],
            env=service_env(profile, service, ports[service], config),
        )
    for service, proc in procs.items():
        log = profile.run_dir / "logs" / f"{service}.log"
        if service == "api":
            wait_http_ready(ports[service][2], service, proc, log)
            say(f"{service} serving (HTTP {ports[service][2]})")
            continue
        wait_healthy(ports[service][0], service, proc, log)
        say(f"{service} serving (gRPC {ports[service][0]})")


def wait_http_ready(
    port: int, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    """Until GET /readyz answers 200 (the api's readiness: Redis and escalation answer)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"devstack: {what} exited with {proc.returncode}\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.5)
    sys.exit(f"devstack: {what} not ready after {timeout:.0f}s; see {log}")


def wait_healthy(
    port: int, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"devstack: {what} exited with {proc.returncode}\n{log.read_text()[-3000:]}")
        check = subprocess.run(
            [str(VENV_PYTHON), "-m", "tocsin_common.healthcheck", str(port)],
            capture_output=True,
            cwd=ROOT,
        )
        if check.returncode == 0:
            return
        time.sleep(0.5)
    sys.exit(f"devstack: {what} not healthy after {timeout:.0f}s; see {log}")


def stop_all(profile: Profile) -> None:
    pids = profile.run_dir / "pids"
    if not pids.exists():
        say("nothing to stop")
        return
    # Services first, the broker and store last, so services can flush on SIGTERM.
    order = sorted(pids.glob("*.pid"), key=lambda p: p.stem in ("kafka", "redis", "postgres"))
    for pidfile in order:
        pid = int(pidfile.read_text())
        # PostgreSQL: SIGINT is its fast shutdown (SIGTERM waits for every client to leave).
        stop_signal = signal.SIGINT if pidfile.stem == "postgres" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, stop_signal)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        pidfile.unlink()
        say(f"stopped {pidfile.stem} (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ")[-1].split()[0] != "Z"


def crash_and_restart(profile: Profile, component: str | None) -> None:
    """SIGKILL Kafka or Redis (a crash, no shutdown) and start it again on the same data."""
    if component not in ("kafka", "redis"):
        sys.exit("devstack: crash needs kafka or redis")
    pidfile = profile.run_dir / "pids" / f"{component}.pid"
    pid = int(pidfile.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    port = profile.kafka_port if component == "kafka" else profile.redis_port
    while time.monotonic() < deadline and (_alive(pid) or port_open(port)):
        time.sleep(0.1)
    if component == "kafka":
        start_kafka(profile, fresh=False)
    else:
        start_redis(profile)


def status(profile: Profile) -> None:
    pids = profile.run_dir / "pids"
    for pidfile in sorted(pids.glob("*.pid")) if pids.exists() else []:
        pid = int(pidfile.read_text())
        print(f"{pidfile.stem:14} pid {pid:7} {'running' if _alive(pid) else 'dead'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "command", choices=["fetch", "infra-up", "up", "down", "status", "env", "crash"]
    )
    parser.add_argument(
        "component",
        nargs="?",
        choices=["kafka", "redis"],
        help="with crash: the process to SIGKILL and start again on the same data",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="dev")
    parser.add_argument("--config", default=str(ROOT / "config" / "tocsin.example.yaml"))
    parser.add_argument(
        "--fresh", action="store_true", help="wipe Kafka, Redis and PostgreSQL data first"
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.command == "fetch":
        ensure_kafka_jars()
        ensure_redis()
        ensure_postgres()
        ensure_chromium()
        # axe-core for the console's accessibility check (npm pack, pinned, checksummed).
        subprocess.run([sys.executable, str(ROOT / "tools" / "axe_core.py")], check=True)
    elif args.command in ("infra-up", "up"):
        if args.fresh and (profile.run_dir / "redis").exists():
            shutil.rmtree(profile.run_dir / "redis")
        start_redis(profile)
        start_kafka(profile, fresh=args.fresh)
        start_postgres(profile, fresh=args.fresh)
        create_topics(profile)
        if args.command == "up":
            start_services(profile, Path(args.config).resolve())
            bootstrap_admin(profile)
            issue_heartbeat_urls(profile)
            print_welcome(profile)
    elif args.command == "down":
        stop_all(profile)
    elif args.command == "status":
        status(profile)
    elif args.command == "env":
        print(f"export TOCSIN_KAFKA_BOOTSTRAP={profile.bootstrap}")
        print(f"export TOCSIN_REDIS_URL={profile.redis_url}")
        print(f"export TOCSIN_POSTGRES_URL={profile.postgres_url}")
        pw = secret_file(profile, "postgres-password")
        print(f"export TOCSIN_POSTGRES_PASSWORD_FILE={pw}")
        print(f"export TOCSIN_DEVSTACK_PROFILE={profile.name}")
        for name, value in profile.partition_env.items():
            print(f"export {name}={value}")
    elif args.command == "crash":
        crash_and_restart(profile, args.component)


def print_welcome(profile: Profile) -> None:
    http = profile.ingest[2]
    rec = profile.run_dir / "recorded"
    print(f"""
Tocsin is up ({profile.name} profile). Send an alert, PagerDuty Events v2 style:

  curl -sS -X POST http://127.0.0.1:{http}/v2/enqueue -H 'Content-Type: application/json' \\
    -d '{{"routing_key":"checkout000000000000000000000001","event_action":"trigger",
         "payload":{{"summary":"checkout 5xx above 5%","source":"checkout-7d9f","severity":"critical"}}}}'

The page shows up at the recording webhook peer (127.0.0.1:{profile.recorder_port}):
  {rec}/pages.jsonl        every page delivered, one JSON per line
  {rec}/spans.jsonl        every span the services exported (OTLP on :{profile.recorder_port + 1})
  python -m tools.recorder --show-trace TRACE_ID --out {rec}   prints one trace as a tree
Everything else needs a credential. The bootstrap admin token is in
  {admin_token_file(profile)}
  (docs/security.md: create people's tokens with it over AuthService, then revoke it).
Heartbeats are pinged at secret URLs, one per monitor, issued once and kept in
  {heartbeat_urls_dir(profile)}/<heartbeat id>.url
  e.g. curl -sS -X POST "$(cat {heartbeat_urls_dir(profile)}/nightly-backup.url)"
  (docs/ingest.md#heartbeats: issue or rotate one with python -m tocsin_ingest.issue_ping_url).
The web console: http://127.0.0.1:{profile.api[2]}/console/ (sign in with that token; docs/console.md)
The REST API (same tokens): http://127.0.0.1:{profile.api[2]}/api/v1/docs (docs/api.md), e.g.
  curl -sS -H "Authorization: Bearer $(cat {admin_token_file(profile)})" \\
    http://127.0.0.1:{profile.api[2]}/api/v1/incidents
Logs: {profile.run_dir}/logs/   Stop: make down
""")


if __name__ == "__main__":
    main()
