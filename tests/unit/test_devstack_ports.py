"""tools/devstack.py's profiles: every service (the api included) has its ports, and no
two stacks that may run side by side (dev, test, bench, h1..h7) share a port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import devstack


def ports_of(profile: devstack.Profile) -> list[int]:
    services = (
        profile.ingest,
        profile.correlation,
        profile.escalation,
        profile.notification,
        profile.api,
    )
    ports = [p for service in services for p in service if p]
    return [
        *ports,
        profile.kafka_port,
        profile.controller_port,
        profile.redis_port,
        profile.recorder_port,
        profile.recorder_port + 1,  # its OTLP receiver
    ]


def test_the_api_runs_in_every_profile_with_ports_of_its_own() -> None:
    assert devstack.SERVICES["api"] == "tocsin_api"
    seen: dict[int, str] = {}
    for name, profile in devstack.PROFILES.items():
        grpc, metrics, http = profile.api
        assert grpc and metrics and http, f"{name}: the api needs gRPC (health), metrics, HTTP"
        ports = ports_of(profile)
        assert len(ports) == len(set(ports)), f"{name} uses a port twice: {sorted(ports)}"
        for port in ports:
            assert port not in seen, f"{name} and {seen.get(port)} both use port {port}"
            seen[port] = name


def test_the_api_is_told_where_the_others_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack, "ROOT", tmp_path)  # its generated secrets land there
    profile = devstack.PROFILES["h1"]
    env = devstack.service_env(profile, "api", profile.api, tmp_path / "tocsin.yaml")
    assert env["TOCSIN_HTTP_PORT"] == str(profile.api[2])
    assert env["TOCSIN_GRPC_PORT"] == str(profile.api[0])
    assert env["TOCSIN_CORRELATION_GRPC"] == f"127.0.0.1:{profile.correlation[0]}"
    assert env["TOCSIN_NOTIFICATION_GRPC"] == f"127.0.0.1:{profile.notification[0]}"
    assert env["TOCSIN_INGEST_GRPC"] == f"127.0.0.1:{profile.ingest[0]}"
    assert env["TOCSIN_INSIGHT_GRPC"] == f"127.0.0.1:{profile.insight[0]}"
    assert env["TOCSIN_API_PUBLIC_URL"] == f"http://127.0.0.1:{profile.api[2]}"


def test_test_profiles_keep_few_partitions_dev_and_bench_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOCSIN_KAFKA_PARTITIONS", raising=False)
    small = {"TOCSIN_KAFKA_PARTITIONS": str(devstack.TEST_PARTITIONS)}
    for name in ("test", *(f"h{n}" for n in range(1, 7))):
        assert devstack.PROFILES[name].partition_env == small, name
    for name in ("dev", "bench"):  # the services' default (48): nothing exported
        assert devstack.PROFILES[name].partition_env == {}, name
    # The caller's setting wins, for every profile.
    monkeypatch.setenv("TOCSIN_KAFKA_PARTITIONS", "24")
    assert devstack.PROFILES["test"].partition_env == {"TOCSIN_KAFKA_PARTITIONS": "24"}
    assert devstack.PROFILES["dev"].partition_env == {"TOCSIN_KAFKA_PARTITIONS": "24"}
