"""The deployment artefacts users run: Dockerfiles, docker-compose.yml and deploy/k8s.

No network and no Docker: kustomize renders every Kubernetes target (base, each overlay, and
base plus each component), every rendered document is validated offline against the
Kubernetes JSON schemas shipped by kubernetes-validate (strict: unknown fields fail), and the
rest is checked against the code it deploys: ports from tocsin_common.settings, topics from
tocsin_common.topics, entry points from each service's package, the config from its loader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"

try:
    from tocsin_common import settings as tocsin_settings
    from tocsin_common import topics as tocsin_topics
except ImportError:  # running from a checkout without `make venv`
    sys.path.insert(0, str(ROOT / "libs" / "common"))
    from tocsin_common import settings as tocsin_settings
    from tocsin_common import topics as tocsin_topics

DEFAULT_PORTS = tocsin_settings.DEFAULT_PORTS

# Schemas: the oldest Kubernetes with GA native gRPC probes, and the newest shipped.
KUBERNETES_VERSIONS = ("1.27.0", "newest")
UID = 10001
CONFIG_MOUNT = "/etc/tocsin"
# Secrets every target expects to exist in the cluster rather than in its render: no
# secret value ships in the manifests; the user creates them (docs/deployment.md).
EXTERNAL_SECRETS = {"tocsin-secrets"}

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# What is being deployed
# ---------------------------------------------------------------------------------------------


def service_dirs() -> dict[str, Path]:
    """services/<name>/ with a pyproject.toml: the services that need an image."""
    return {
        d.name: d for d in sorted((ROOT / "services").iterdir()) if (d / "pyproject.toml").is_file()
    }


def test_the_services_are_the_ones_settings_knows() -> None:
    assert set(service_dirs()) == set(DEFAULT_PORTS), (
        "services/ and tocsin_common.settings.DEFAULT_PORTS disagree on which services exist"
    )


# ---------------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


@cache
def dockerignore_patterns() -> tuple[tuple[bool, tuple[str, ...]], ...]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, tuple(line.lstrip("!").strip("/").split("/"))))
    return tuple(patterns)


def _segments_match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return (
        bool(path) and fnmatchcase(path[0], pattern[0]) and _segments_match(pattern[1:], path[1:])
    )


def excluded_from_build_context(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = tuple(relative.strip("/").split("/"))
    excluded = False
    for negated, pattern in dockerignore_patterns():
        if any(_segments_match(pattern, parts[:n]) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("service", sorted(service_dirs()))
def test_dockerfile_builds_the_service_as_specified(service: str) -> None:
    dockerfile = ROOT / "services" / service / "Dockerfile"
    assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} is missing"
    instructions = dockerfile_instructions(dockerfile)
    where = dockerfile.relative_to(ROOT)

    images = [args.split()[0] for word, args in instructions if word == "FROM"]
    assert images and all(image == "python:3.11-slim" for image in images), (
        f"{where}: every stage must start FROM python:3.11-slim, found {images}"
    )
    runs = [args for word, args in instructions if word == "RUN"]
    requirements = next(
        (i for i, r in enumerate(runs) if "pip install -r requirements.txt" in r), None
    )
    no_deps = next((i for i, r in enumerate(runs) if "--no-deps" in r), None)
    assert requirements is not None and no_deps is not None and requirements < no_deps, (
        f"{where}: expected `pip install -r requirements.txt`, then the packages with --no-deps"
    )
    assert "./libs/common" in runs[no_deps] and f"./services/{service}" in runs[no_deps], (
        f"{where}: the --no-deps install must name ./libs/common and ./services/{service}"
    )

    last = final_stage(instructions)
    users = [args for word, args in last if word == "USER"]
    assert users and users[-1].split(":")[0] == str(UID), (
        f"{where}: the final stage must run as USER {UID}, found {users}"
    )
    exposed = {
        int(p.split("/")[0]) for word, args in last if word == "EXPOSE" for p in args.split()
    }
    ports = DEFAULT_PORTS[service]
    expected = {ports.grpc, ports.metrics} | ({ports.http} if ports.http else set())
    assert exposed == expected, (
        f"{where}: EXPOSE {sorted(exposed)}, settings say {sorted(expected)}"
    )


@pytest.mark.parametrize("service", sorted(service_dirs()))
def test_dockerfile_entrypoint_runs_a_package_of_the_service(service: str) -> None:
    service_dir = ROOT / "services" / service
    where = f"services/{service}/Dockerfile"
    entrypoints = [
        args
        for word, args in dockerfile_instructions(service_dir / "Dockerfile")
        if word == "ENTRYPOINT"
    ]
    assert len(entrypoints) == 1, f"{where}: expected one ENTRYPOINT, found {len(entrypoints)}"
    command = json.loads(entrypoints[0])  # exec form, so signals reach Python
    assert command[:2] == ["python", "-m"] and len(command) == 3, (
        f'{where}: ENTRYPOINT must be ["python", "-m", "<package>"], found {command}'
    )
    package = command[2]
    assert (service_dir / package).is_dir(), (
        f"{where}: ENTRYPOINT runs {package}, but services/{service}/{package}/ does not exist"
    )
    include = tomllib.loads((service_dir / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    assert any(fnmatchcase(package, pattern) for pattern in include), (
        f"{where}: {package} is not packaged by services/{service}/pyproject.toml ({include})"
    )


@pytest.mark.parametrize("service", sorted(service_dirs()))
def test_dockerfile_copies_only_what_the_build_context_sends(service: str) -> None:
    where = f"services/{service}/Dockerfile"
    for word, args in dockerfile_instructions(ROOT / "services" / service / "Dockerfile"):
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{where}: COPY {source}: no such path in the repo"
            assert not excluded_from_build_context(source), (
                f"{where}: COPY {source}, but .dockerignore leaves it out of the build context"
            )
    # The generated protobuf code must reach the image (the build fails without it).
    assert not excluded_from_build_context("libs/common/tocsin/v1/alert_pb2.py")
    assert excluded_from_build_context(".git/HEAD") and excluded_from_build_context("tests")


# ---------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------


def interpolate(value: Any) -> Any:
    """Compose's interpolation with an empty environment: ${X:-default} -> default, and
    ${X:?message} (required) -> empty (compose would refuse to start)."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}", "", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    return value.replace("$$", "$")


@cache
def compose() -> Doc:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def compose_services() -> dict[str, Doc]:
    services: dict[str, Doc] = compose()["services"]
    return services


def environment(service: Doc) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(interpolate(value)) for key, value in env.items()}


def depends_on(service: Doc) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def test_compose_has_a_built_service_for_every_service_dir() -> None:
    services = compose_services()
    for name in service_dirs():
        assert name in services, f"docker-compose.yml has no service {name!r}"
        assert "build" in services[name], f"docker-compose.yml: {name} has no `build`"


@pytest.mark.parametrize("name", sorted(compose_services()))
def test_compose_builds_point_at_existing_dockerfiles(name: str) -> None:
    build = compose_services()[name].get("build")
    if build is None:
        return
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert context.is_dir(), f"docker-compose.yml: {name}: build context {context} does not exist"
    assert dockerfile.is_file(), f"docker-compose.yml: {name}: {dockerfile} does not exist"


@pytest.mark.parametrize("name", sorted(compose_services()))
def test_compose_dependencies_exist_and_can_be_waited_for(name: str) -> None:
    services = compose_services()
    for dep, condition in depends_on(services[name]).items():
        assert dep in services, f"docker-compose.yml: {name} depends on unknown service {dep!r}"
        assert condition in {
            "service_started",
            "service_healthy",
            "service_completed_successfully",
        }, f"docker-compose.yml: {name} -> {dep}: unknown condition {condition!r}"
        if condition == "service_healthy":
            check = services[dep].get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), (
                f"docker-compose.yml: {name} waits for {dep} to be healthy, "
                f"but {dep} has no healthcheck"
            )
        if condition == "service_completed_successfully":
            assert services[dep].get("restart", "no") == "no", (
                f"docker-compose.yml: {name} waits for {dep} to complete, but {dep} restarts"
            )


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_compose_runs_tocsin_services_as_they_expect(name: str) -> None:
    services = compose_services()
    service, ports = services[name], DEFAULT_PORTS[name]
    where = f"docker-compose.yml: {name}"

    test = service["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "tocsin_common.healthcheck", str(ports.grpc)], (
        f"{where}: healthcheck must ask grpc.health.v1 on port {ports.grpc}, found {test}"
    )
    assert (ROOT / "libs/common/tocsin_common/healthcheck.py").is_file()

    env = environment(service)
    expected = {
        "TOCSIN_GRPC_PORT": str(ports.grpc),
        "TOCSIN_METRICS_PORT": str(ports.metrics),
        "TOCSIN_GRPC_HOST": "0.0.0.0",
        "TOCSIN_ESCALATION_GRPC": f"escalation:{DEFAULT_PORTS['escalation'].grpc}",
    }
    if ports.http:
        expected |= {"TOCSIN_HTTP_PORT": str(ports.http), "TOCSIN_HTTP_HOST": "0.0.0.0"}
    for key, value in expected.items():
        assert env.get(key) == value, f"{where}: {key}={env.get(key)!r}, expected {value!r}"

    # Addresses of the infrastructure name services of this file.
    for key in ("TOCSIN_KAFKA_BOOTSTRAP", "TOCSIN_REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        host = re.sub(r"^[a-z]+://", "", env[key]).split(":")[0]
        assert host in services, f"{where}: {key}={env[key]!r} names no compose service"

    # Config read-only from ./config, and the file TOCSIN_CONFIG names is there.
    mounts = [interpolate(v) for v in service.get("volumes", [])]
    assert f"./config:{CONFIG_MOUNT}:ro" in mounts, f"{where}: ./config not mounted read-only"
    config_file = env["TOCSIN_CONFIG"]
    assert config_file.startswith(CONFIG_MOUNT + "/")
    assert (ROOT / "config" / config_file.removeprefix(CONFIG_MOUNT + "/")).is_file(), (
        f"{where}: TOCSIN_CONFIG={config_file} but that file is not in ./config"
    )
    # Same constraints as in Kubernetes: nothing writable but /tmp.
    assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), (
        f"{where}: expected read_only: true with a tmpfs at /tmp"
    )


def published_ports(service: Doc) -> list[str]:
    """A service's published ports as compose reads them, with an empty environment:
    ``[host_ip:]host_port:container_port``, long syntax folded into the same form."""
    published = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host_ip = interpolate(entry.get("host_ip", ""))
            short = f"{entry.get('published', '')}:{entry['target']}"
            published.append(f"{host_ip}:{short}" if host_ip else short)
        else:
            published.append(str(interpolate(entry)))
    return published


def test_compose_publishes_only_the_http_ports_people_reach_on_loopback() -> None:
    """The bug this guards: Redis, Kafka and every gRPC port published on all interfaces.
    People and tools reach two ports: alert-ingest's HTTP (alerts) and the api's (docs/api.md)."""
    ingest_http = DEFAULT_PORTS["alert-ingest"].http
    api_http = DEFAULT_PORTS["api"].http
    published = {
        name: published_ports(service)
        for name, service in compose_services().items()
        if published_ports(service)
    }
    assert published == {
        "alert-ingest": [f"127.0.0.1:{ingest_http}:{ingest_http}"],
        "api": [f"127.0.0.1:{api_http}:{api_http}"],
    }, (
        f"docker-compose.yml publishes {published}; only alert-ingest's and the api's HTTP "
        "ports may be published, bound to 127.0.0.1 by default"
    )
    for name, service in compose_services().items():
        assert service.get("network_mode") != "host", f"docker-compose.yml: {name} on host network"
    # The bind address is a variable, so an operator can put it behind TLS on 0.0.0.0.
    (raw,) = compose_services()["alert-ingest"]["ports"]
    assert raw.startswith("${TOCSIN_INGEST_BIND:-127.0.0.1}:"), raw
    (raw,) = compose_services()["api"]["ports"]
    assert raw.startswith("${TOCSIN_API_BIND:-127.0.0.1}:"), raw


SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|PRIVATE_KEY|_PASS|_KEYS)$")
REQUIRED_SECRETS = {
    "TOCSIN_SERVICE_SECRET",
    "TOCSIN_WEBHOOK_SECRET",
    "TOCSIN_LINK_KEYS",
    "TOCSIN_REDIS_PASSWORD",
}


def test_compose_ships_no_secret_value() -> None:
    """No secret has a value in the file: each one is required (``${X:?message}``) or, for
    optional providers, empty when unset (``${X:-}``); never a literal or a default."""
    seen = set()
    for name, service in compose_services().items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, raw in env.items():
            if not SECRET_NAME.search(key):
                continue
            seen.add(key)
            where = f"docker-compose.yml: {name}: {key}={raw!r}"
            match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}", str(raw))
            assert match and match.group(1) == key, f"{where}: must come from ${{{key}...}}"
            operator, rest = match.group(2) or "", match.group(3)
            if key in REQUIRED_SECRETS:
                assert operator == ":?" and rest.strip(), (
                    f"{where}: must be required, ${{{key}:?message}}"
                )
            else:
                assert operator == ":?" or (operator in (":-", "") and not rest), (
                    f"{where}: a default value ships a secret"
                )
    assert seen >= REQUIRED_SECRETS, f"docker-compose.yml never sets {REQUIRED_SECRETS - seen}"


def test_compose_redis_takes_a_password_and_syncs_every_write() -> None:
    redis = compose_services()["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendfsync always" in command and "--appendonly yes" in command
    assert "--user default off" in command, "the default (password-less) user must be off"
    assert '">$$TOCSIN_REDIS_PASSWORD"' in command, "the ACL user's password is the secret"
    assert "TOCSIN_REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    for name in DEFAULT_PORTS:
        env = compose_services()[name]["environment"]
        assert env["TOCSIN_REDIS_USERNAME"] == "tocsin", f"docker-compose.yml: {name}"
        assert env["TOCSIN_REDIS_PASSWORD"] == redis["environment"]["TOCSIN_REDIS_PASSWORD"]


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_compose_environment_is_accepted_by_the_services(name: str) -> None:
    env = environment(compose_services()[name])
    env |= {key: "s" * 40 for key in REQUIRED_SECRETS}  # what the operator must provide
    settings = tocsin_settings.Settings.from_env(name, env)
    assert settings.redis.username == "tocsin" and settings.redis.password == "s" * 40


def test_compose_kafka_is_a_single_kraft_node() -> None:
    env = environment(compose_services()["kafka"])
    assert compose_services()["kafka"]["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", f"docker-compose.yml: kafka {key}={env[key]!r}, expected 1"
    bootstrap = environment(compose_services()["alert-ingest"])["TOCSIN_KAFKA_BOOTSTRAP"]
    assert f"://{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"], (
        f"services use {bootstrap}, which Kafka does not advertise"
    )


def test_compose_kafka_init_creates_every_topic_with_its_partitions() -> None:
    init = compose_services()["kafka-init"]
    script = "\n".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    created = dict(re.findall(r"^\s*create\s+(\S+)\s+(\S+)\s*$", script, re.M))
    # The pipeline's topics take TOCSIN_KAFKA_PARTITIONS, with the services' default.
    expected = {
        topic.name: "$$P" if topic.partitions is None else str(topic.partitions)
        for topic in tocsin_topics.ALL_TOPICS
    }
    assert created == expected, "kafka-init and tocsin_common.topics disagree on the topics"
    default = f"${{TOCSIN_KAFKA_PARTITIONS:-{tocsin_topics.DEFAULT_PARTITIONS}}}"
    assert re.search(rf"^\s*P={re.escape(default)}\s*$", script, re.M), script
    assert compose()["x-tocsin-env"]["TOCSIN_KAFKA_PARTITIONS"] == default


def test_compose_otel_collector_forwards_to_jaeger() -> None:
    collector = compose_services()["otel-collector"]
    source = next(v.split(":")[0] for v in collector["volumes"] if "otel-collector.yaml" in v)
    config = yaml.safe_load((ROOT / source).read_text())
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    endpoints = [config["exporters"][e]["endpoint"] for e in exporters]
    assert any(e.split(":")[0] == "jaeger" for e in endpoints), endpoints
    assert "jaeger" in compose_services()


# ---------------------------------------------------------------------------------------------
# Kubernetes: render with kustomize, validate, check
# ---------------------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    pytest.fail(
        "neither `kubectl` (with built-in kustomize) nor `kustomize` is on PATH: the "
        "Kubernetes manifests cannot be rendered, so they cannot be checked. Install one."
    )


def render_targets() -> list[str]:
    """base, every overlay, and every component (applied to base)."""
    overlays = sorted(
        f"overlays/{d.name}"
        for d in (K8S / "overlays").iterdir()
        if (d / "kustomization.yaml").is_file()
    )
    components = sorted(
        f"components/{d.name}"
        for d in (K8S / "components").iterdir()
        if (d / "kustomization.yaml").is_file()
    )
    return ["base", *overlays, *components]


class Renders:
    """Renders each target once per session; a target that fails fails only its own tests."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._docs: dict[str, list[Doc]] = {}

    def __getitem__(self, target: str) -> list[Doc]:
        if target not in self._docs:
            self._docs[target] = self._render(target)
        return self._docs[target]

    def _render(self, target: str) -> list[Doc]:
        command = kustomize_command()
        directory = K8S / target
        if target.startswith("components/"):
            # A component renders only inside a kustomization: base + the component.
            directory = self._workdir / target.replace("/", "-")
            directory.mkdir(exist_ok=True)
            (directory / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [os.path.relpath(K8S / "base", directory)],
                        "components": [os.path.relpath(K8S / target, directory)],
                    }
                )
            )
        result = subprocess.run(
            [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"`{' '.join(command)} deploy/k8s/{target}` failed:\n{result.stderr}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Renders:
    return Renders(tmp_path_factory.mktemp("kustomize"))


def kinds(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_containers(deployment: Doc) -> Iterator[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


TARGETS = render_targets()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_k8s_render_is_valid_against_kubernetes_schemas(
    rendered: Renders, target: str, version: str
) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    version = kubernetes_validate.latest_version() if version == "newest" else version
    docs = rendered[target]
    assert docs, f"deploy/k8s/{target} renders nothing"
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
    assert not problems, f"deploy/k8s/{target} (Kubernetes {version}):\n" + "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_every_service_is_deployed_and_labelled(rendered: Renders, target: str) -> None:
    docs = rendered[target]
    assert set(kinds(docs, "Deployment")) == set(service_dirs())
    # Besides the services: the StatefulSets of dev-only infrastructure (postgres-dev).
    assert set(kinds(docs, "Service")) == set(service_dirs()) | set(kinds(docs, "StatefulSet"))
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "tocsin", (
            f"{target}: {doc['kind']}/{doc['metadata']['name']} lacks the part-of=tocsin label"
        )
    for name, deployment in kinds(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/name") == name
        assert labels.get("app.kubernetes.io/part-of") == "tocsin"


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_pods_are_locked_down(rendered: Renders, target: str) -> None:
    for name, deployment in kinds(rendered[target], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        for container in pod_containers(deployment):
            where = f"{target}: Deployment/{name} container {container['name']}"
            sc = container.get("securityContext", {})

            def effective(key: str, sc: Doc = sc, pod_sc: Doc = pod_sc) -> Any:
                return sc.get(key, pod_sc.get(key))  # the container's setting wins

            assert effective("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true"
            assert effective("runAsUser") == UID, f"{where}: runAsUser is not {UID}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
            assert sc.get("allowPrivilegeEscalation") is False, (
                f"{where}: privilege escalation allowed"
            )
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), (
                f"{where}: capabilities not dropped"
            )
            assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", (
                f"{where}: seccompProfile is not RuntimeDefault"
            )
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where}: no requests"
            assert "memory" in resources.get("limits", {}), f"{where}: no memory limit"

            # The only writable place is an emptyDir at /tmp; config is mounted read-only.
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]["name"]], (
                f"{where}: no emptyDir at /tmp"
            )
            config = mounts.get(CONFIG_MOUNT)
            assert config and config.get("readOnly") is True, (
                f"{where}: config not mounted read-only"
            )
            assert "configMap" in volumes[config["name"]]


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_probes_are_native_grpc_on_each_services_port(rendered: Renders, target: str) -> None:
    for name, deployment in kinds(rendered[target], "Deployment").items():
        ports = DEFAULT_PORTS[name]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        where = f"{target}: Deployment/{name}"
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        expected = {"grpc": ports.grpc, "metrics": ports.metrics} | (
            {"http": ports.http} if ports.http else {}
        )
        assert declared == expected, f"{where}: container ports {declared}, settings say {expected}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("TOCSIN_GRPC_PORT") == str(ports.grpc)
        assert env.get("TOCSIN_METRICS_PORT") == str(ports.metrics)
        assert env.get("TOCSIN_HTTP_PORT") == (str(ports.http) if ports.http else None)
        for probe in ("readinessProbe", "livenessProbe"):
            grpc = container.get(probe, {}).get("grpc")
            assert grpc is not None, f"{where}: {probe} is not a native gRPC probe"
            assert grpc["port"] == ports.grpc, f"{where}: {probe} checks port {grpc['port']}"


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_references_resolve_within_the_render(rendered: Renders, target: str) -> None:
    docs = rendered[target]
    accounts = kinds(docs, "ServiceAccount")
    config_maps = set(kinds(docs, "ConfigMap"))
    secrets = set(kinds(docs, "Secret")) | EXTERNAL_SECRETS
    deployments = kinds(docs, "Deployment")

    for name, account in accounts.items():
        assert account.get("automountServiceAccountToken") is False, (
            f"{target}: ServiceAccount/{name} mounts its token"
        )
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        where = f"{target}: Deployment/{name}"
        assert pod.get("serviceAccountName") in accounts, (
            f"{where}: serviceAccountName {pod.get('serviceAccountName')!r} is not in the render"
        )
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{where}: {volume} not rendered"
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{where}: {volume} not rendered"
        for container in pod_containers(deployment):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, f"{where}: {source}"
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, f"{where}: {source}"

    # A Service fronts one workload: a Deployment, or a StatefulSet (components/postgres-dev).
    workloads = [*deployments.values(), *kinds(docs, "StatefulSet").values()]
    for name, service in kinds(docs, "Service").items():
        matched = [
            d
            for d in workloads
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"{target}: Service/{name} selects {len(matched)} workloads"
        (container,) = matched[0]["spec"]["template"]["spec"]["containers"]
        named = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (
                f"{target}: Service/{name} targets {port['targetPort']}"
            )
    for name, hpa in kinds(docs, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments, f"{target}: HPA/{name}"
    for name, pdb in kinds(docs, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selects(selector, d["spec"]["template"]["metadata"]["labels"])
            for d in deployments.values()
        ), f"{target}: PodDisruptionBudget/{name} selects no Deployment"


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_environment_points_at_the_mounted_config(rendered: Renders, target: str) -> None:
    docs = rendered[target]
    (env,) = [c for n, c in kinds(docs, "ConfigMap").items() if n.startswith("tocsin-env")]
    (config,) = [c for n, c in kinds(docs, "ConfigMap").items() if n.startswith("tocsin-config")]
    (key,) = config["data"]
    assert env["data"]["TOCSIN_CONFIG"] == f"{CONFIG_MOUNT}/{key}"
    assert env["data"]["TOCSIN_GRPC_HOST"] == "0.0.0.0"
    assert env["data"]["TOCSIN_ESCALATION_GRPC"] == f"escalation:{DEFAULT_PORTS['escalation'].grpc}"
    assert env["data"]["TOCSIN_DATA_DIR"].startswith("/tmp/")
    for deployment in kinds(docs, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_MOUNT)
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates (no reload)"


@pytest.mark.parametrize("target", TARGETS)
def test_k8s_ships_no_secret_value(rendered: Renders, target: str) -> None:
    docs = rendered[target]
    assert not kinds(docs, "Secret"), (
        f"{target} renders Secrets {sorted(kinds(docs, 'Secret'))}: a value in git is public; "
        "the user creates tocsin-secrets"
    )
    for doc in kinds(docs, "ConfigMap").values():
        secret_like = sorted(k for k in doc.get("data", {}) if SECRET_NAME.search(k))
        assert not secret_like, f"{target}: ConfigMap {doc['metadata']['name']} holds {secret_like}"
        redis_url = doc.get("data", {}).get("TOCSIN_REDIS_URL", "")
        assert "@" not in redis_url, f"{target}: a password in TOCSIN_REDIS_URL"


def test_k8s_config_file_is_a_valid_tocsin_config() -> None:
    from tocsin_common.config import load_config

    config = load_config(K8S / "base" / "tocsin.yaml")  # ConfigError lists every problem
    assert config.services


def test_k8s_production_scales_survives_disruption_and_denies_by_default(
    rendered: Renders,
) -> None:
    docs = rendered["overlays/production"]
    deployments = kinds(docs, "Deployment")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in kinds(docs, "HorizontalPodAutoscaler").values()
    }
    assert set(hpas) == set(deployments), "every Deployment needs a HorizontalPodAutoscaler"
    for name, hpa in hpas.items():
        assert hpa["spec"]["minReplicas"] >= 2, f"HPA/{name}: one replica is no redundancy"
        assert "replicas" not in deployments[name]["spec"], (
            f"Deployment/{name} sets replicas, which every apply would reset under its HPA"
        )
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            selects(p["spec"]["selector"]["matchLabels"], labels)
            for p in kinds(docs, "PodDisruptionBudget").values()
        ), f"Deployment/{name} has no PodDisruptionBudget"

    policies = kinds(docs, "NetworkPolicy").values()
    tocsin_pod = {"app.kubernetes.io/part-of": "tocsin", "app.kubernetes.io/name": "alert-ingest"}
    deny = [
        p
        for p in policies
        if set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        and (
            not p["spec"]["podSelector"]
            or selects(p["spec"]["podSelector"].get("matchLabels", {}), tocsin_pod)
        )
    ]
    assert deny, "no default-deny NetworkPolicy covering the Tocsin pods"
    ingest_http = DEFAULT_PORTS["alert-ingest"].http
    assert any(
        selects(p["spec"]["podSelector"].get("matchLabels", {}), tocsin_pod)
        and any(
            not rule.get("from")
            and any(port.get("port") == ingest_http for port in rule.get("ports", []))
            for rule in p["spec"].get("ingress", [])
        )
        for p in policies
    ), f"nothing allows monitoring tools in to alert-ingest's HTTP port {ingest_http}"
    api_pod = {"app.kubernetes.io/part-of": "tocsin", "app.kubernetes.io/name": "api"}
    api_http = DEFAULT_PORTS["api"].http
    assert any(
        selects(p["spec"]["podSelector"].get("matchLabels", {}), api_pod)
        and any(
            not rule.get("from")
            and any(port.get("port") == api_http for port in rule.get("ports", []))
            for rule in p["spec"].get("ingress", [])
        )
        for p in policies
    ), f"nothing lets people in to the api's HTTP port {api_http}"

    (env,) = [c for n, c in kinds(docs, "ConfigMap").items() if n.startswith("tocsin-env")]
    assert env["data"]["OTEL_TRACES_EXPORTER"] == "otlp", (
        "production should trace (components/tracing)"
    )
    assert "tocsin-secrets" not in kinds(docs, "Secret"), (
        "production must not apply placeholder secrets"
    )
    # Transport: Kafka over SASL_SSL, Redis over TLS as an ACL user.
    assert env["data"]["TOCSIN_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["data"]["TOCSIN_KAFKA_SASL_USERNAME"]
    assert env["data"]["TOCSIN_REDIS_URL"].startswith("rediss://")
    assert env["data"]["TOCSIN_REDIS_USERNAME"]
    # ... which the services accept, given the secrets the user puts in tocsin-secrets.
    secrets = {"TOCSIN_KAFKA_SASL_PASSWORD": "k" * 40, "TOCSIN_REDIS_PASSWORD": "r" * 40}
    settings = tocsin_settings.Settings.from_env("escalation", {**env["data"], **secrets})
    assert settings.kafka_security.uses_sasl and settings.redis.uses_tls
