"""Heartbeat ping URLs: secrets kept as hashes, compared in constant time; the HTTP route
that pings with one; the public base URL they start with; spans never record a secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from aiohttp.web import UrlMappingMatchInfo
from tocsin.v1 import alert_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config import ConfigStore
from tocsin_common.settings import Settings, SettingsError
from tocsin_common.tracing import redacted_path
from tocsin_ingest import ping_urls
from tocsin_ingest.heartbeats import HeartbeatMonitors
from tocsin_ingest.http_api import IngestHttpApi

from tests.unit.test_ingest_heartbeats import (
    CONFIG,
    MemoryHeartbeatStore,
    MemoryPingSecrets,
    Recorder,
    issue,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_secrets_are_prefixed_random_and_kept_as_a_hash() -> None:
    a, b = ping_urls.new_secret(), ping_urls.new_secret()
    assert a != b and a.startswith("hbs_") and len(a) == 47
    assert ping_urls.looks_like_secret(a)
    assert not ping_urls.looks_like_secret("hbs_short")
    assert not ping_urls.looks_like_secret(a.replace("hbs_", "tocsin_"))
    digest = ping_urls.secret_hash(a)
    assert len(digest) == 64 and digest != ping_urls.secret_hash(b)
    record = ping_urls.rotated(None, a, NOW, "max")
    assert a not in repr(record) and a not in str(record.to_redis())


def test_the_stored_record_round_trips_through_redis_fields() -> None:
    first = ping_urls.rotated(None, ping_urls.new_secret(), NOW, "max")
    record = ping_urls.rotated(first, ping_urls.new_secret(), NOW, "ann", timedelta(hours=1))
    raw = {k.encode() if isinstance(k, str) else k: v for k, v in record.to_redis().items()}
    assert (
        ping_urls.PingSecret.from_redis(
            {k: v.encode() if isinstance(v, str) else v for k, v in raw.items()}
        )
        == record
    )
    assert record.previous_digest == first.digest
    assert record.previous_until == NOW + timedelta(hours=1)


def test_accepts_only_the_current_secret_and_the_previous_during_its_overlap() -> None:
    old, new = ping_urls.new_secret(), ping_urls.new_secret()
    assert not ping_urls.accepts(None, old, NOW)  # never issued
    first = ping_urls.rotated(None, old, NOW, "max")
    assert ping_urls.accepts(first, old, NOW)
    assert not ping_urls.accepts(first, new, NOW)
    assert not ping_urls.accepts(first, old + "x", NOW)
    at_once = ping_urls.rotated(first, new, NOW, "max")
    assert not ping_urls.accepts(at_once, old, NOW)
    overlapping = ping_urls.rotated(first, new, NOW, "max", timedelta(minutes=5))
    assert ping_urls.accepts(overlapping, old, NOW + timedelta(minutes=4, seconds=59))
    assert not ping_urls.accepts(overlapping, old, NOW + timedelta(minutes=5))
    assert ping_urls.accepts(overlapping, new, NOW + timedelta(days=400))
    # A hash stored as if it were a secret (someone reading Redis) is no secret.
    assert not ping_urls.accepts(first, first.digest, NOW)


def test_the_overlap_is_bounded() -> None:
    assert ping_urls.previous_valid_for_problem(timedelta(0)) is None
    assert ping_urls.previous_valid_for_problem(timedelta(days=7)) is None
    assert ping_urls.previous_valid_for_problem(timedelta(days=7, seconds=1)) == (
        "previous_valid_for: must be at most 7 days"
    )
    assert ping_urls.previous_valid_for_problem(timedelta(seconds=-1)) == (
        "previous_valid_for: must not be negative"
    )


def test_the_ping_url_is_under_the_public_base() -> None:
    secret = ping_urls.new_secret()
    assert ping_urls.ping_url("https://ingest.example.com/", "nightly-backup", secret) == (
        f"https://ingest.example.com/v1/heartbeats/nightly-backup/ping/{secret}"
    )


def test_the_public_url_defaults_to_the_http_port_and_is_checked() -> None:
    assert Settings.from_env("alert-ingest", {}).ingest_public_url == "http://127.0.0.1:8080"
    assert (
        Settings.from_env("alert-ingest", {"TOCSIN_HTTP_PORT": "9999"}).ingest_public_url
        == "http://127.0.0.1:9999"
    )
    given = {"TOCSIN_INGEST_PUBLIC_URL": "https://ingest.example.com/tocsin/"}
    assert Settings.from_env("alert-ingest", given).ingest_public_url == (
        "https://ingest.example.com/tocsin"
    )
    for bad in ("ingest.example.com", "ftp://x", "https://", "https://x/?a=1"):
        with pytest.raises(SettingsError, match="TOCSIN_INGEST_PUBLIC_URL"):
            Settings.from_env("alert-ingest", {"TOCSIN_INGEST_PUBLIC_URL": bad})


def _request(path: str, **match: str) -> Any:
    request = make_mocked_request("GET", path)
    info = UrlMappingMatchInfo(match, None)  # type: ignore[arg-type]
    request._match_info = info
    return request


def test_spans_record_paths_without_secrets_or_keys() -> None:
    secret = ping_urls.new_secret()
    path = f"/v1/heartbeats/nightly/ping/{secret}"
    assert redacted_path(_request(path, id="nightly", secret=secret)) == (
        "/v1/heartbeats/nightly/ping/REDACTED"
    )
    assert redacted_path(_request("/v1/webhooks/grafana/k123", key="k123")) == (
        "/v1/webhooks/grafana/REDACTED"
    )
    assert redacted_path(_request("/v2/enqueue")) == "/v2/enqueue"


# --- the HTTP route ---------------------------------------------------------------------------


class NoPublisher:
    async def publish_all(self, alerts: list[alert_pb2.Alert]) -> None:
        raise AssertionError("pings publish through HeartbeatMonitors")


@pytest.fixture
async def served(tmp_path: Any) -> Any:
    path = tmp_path / "tocsin.yaml"
    path.write_text(CONFIG)
    config = ConfigStore(str(path))
    clock = FakeClock()
    store, published, secrets = MemoryHeartbeatStore(), Recorder(), MemoryPingSecrets()
    monitors = HeartbeatMonitors(lambda: config.current, store, published, clock)
    api = IngestHttpApi(config, NoPublisher(), None, monitors, clock, secrets)  # type: ignore[arg-type]
    client = TestClient(TestServer(api.app(traced=False)))
    await client.start_server()
    try:
        yield client, clock, store, secrets
    finally:
        await client.close()


async def test_a_ping_needs_the_issued_url_and_every_refusal_is_the_same(served: Any) -> None:
    client, clock, store, secrets = served
    secret = issue(secrets, clock, "cron")
    answers = []
    for path in (
        "/v1/heartbeats/cron/ping",  # the unauthenticated URL of before
        f"/v1/heartbeats/cron/ping/{ping_urls.new_secret()}",  # wrong secret
        f"/v1/heartbeats/nightly-backup/ping/{secret}",  # no URL issued; cron's secret
        f"/v1/heartbeats/no-such-monitor/ping/{secret}",  # unknown
    ):
        for method in (client.get, client.post):
            async with method(path) as r:
                answers.append((r.status, await r.json()))
    assert {status for status, _ in answers} == {404}
    assert all(body == answers[0][1] for _, body in answers)
    body = answers[0][1]
    assert body["fields"][0]["field"] == "path"
    assert "HeartbeatService.IssuePingUrl" in body["fields"][0]["problem"]
    assert store.last_ping == {}
    async with client.post(f"/v1/heartbeats/cron/ping/{secret}") as r:
        assert r.status == 200
        reply = await r.json()
    assert reply["heartbeat"] == "cron" and reply["resolved"] is False
    assert store.last_ping == {"cron": clock.now().timestamp()}
