"""Heartbeat ping URLs on the stack's alert-ingest (stack_config/55-heartbeats.yaml):

only a manager of the heartbeat's team issues a ping URL (HeartbeatService, bearer
credential, audited); a ping without the secret, with a wrong one or at the old
unauthenticated URL is refused and does not count, so the missed-heartbeat alert still
fires; the issued URL counts and resolves it; rotation voids the old URL (at once, or after
the overlap asked for); no call ever returns a secret again.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tocsin.v1 import (
    alert_pb2,
    auth_service_pb2,
    auth_service_pb2_grpc,
    heartbeat_service_pb2,
    heartbeat_service_pb2_grpc,
)

from tests.integration.harness import Stack
from tests.integration.test_ingest_front_door import TopicReader, _alert

pytestmark = pytest.mark.integration

MISSED = "hb-it-missed"  # interval 2 s, grace 0
ROTATE = "hb-it-rotate"  # interval 1 h


@pytest.fixture(scope="module")
async def alerts(stack: Stack) -> AsyncIterator[TopicReader]:
    reader = TopicReader(stack.bootstrap, "alerts.normalized", _alert)
    await reader.start()
    yield reader
    await reader.stop()


async def issue(
    stack: Stack, token: str, heartbeat_id: str, overlap_s: int = 0
) -> heartbeat_service_pb2.IssuePingUrlResponse:
    request = heartbeat_service_pb2.IssuePingUrlRequest(heartbeat_id=heartbeat_id)
    if overlap_s:
        request.previous_valid_for.CopyFrom(Duration(seconds=overlap_s))
    async with stack.channel("alert-ingest", token) as channel:
        stub = heartbeat_service_pb2_grpc.HeartbeatServiceStub(channel)
        reply: heartbeat_service_pb2.IssuePingUrlResponse = await stub.IssuePingUrl(request)
        return reply


async def issue_refused(stack: Stack, token: str, heartbeat_id: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await issue(stack, token, heartbeat_id)
    code: grpc.StatusCode = refused.value.code()
    return code


async def listed(stack: Stack, token: str) -> list[heartbeat_service_pb2.HeartbeatMonitor]:
    async with stack.channel("alert-ingest", token) as channel:
        stub = heartbeat_service_pb2_grpc.HeartbeatServiceStub(channel)
        reply = await stub.ListHeartbeats(heartbeat_service_pb2.ListHeartbeatsRequest())
        return list(reply.heartbeats)


async def ping(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(url) as r:
        await r.read()
        return r.status


async def test_only_a_manager_of_the_team_issues_a_ping_url_and_it_is_shown_once(
    stack: Stack,
) -> None:
    manager, _ = await stack.token_for("hb-mgr")
    viewer, _ = await stack.token_for("hb-viewer")
    responder, _ = await stack.token_for("hb-resp")
    outsider, _ = await stack.token_for("hb-outsider")
    assert await issue_refused(stack, "", ROTATE) == grpc.StatusCode.UNAUTHENTICATED
    assert await issue_refused(stack, viewer, ROTATE) == grpc.StatusCode.PERMISSION_DENIED
    assert await issue_refused(stack, responder, ROTATE) == grpc.StatusCode.PERMISSION_DENIED
    # Another team's heartbeat answers as an unknown one does: ids cannot be probed.
    assert await issue_refused(stack, outsider, ROTATE) == grpc.StatusCode.NOT_FOUND
    assert await issue_refused(stack, stack.admin_token, "hb-none") == grpc.StatusCode.NOT_FOUND
    made = await issue(stack, manager, ROTATE)
    prefix = f"{stack.ingest_url}/v1/heartbeats/{ROTATE}/ping/hbs_"
    assert made.ping_url.startswith(prefix), made.ping_url
    secret = made.ping_url.rsplit("/", 1)[1]
    assert not made.HasField("previous_valid_until")

    # Listing: viewers see the team's heartbeats, never a secret; outsiders see none.
    seen = {h.heartbeat_id: h for h in await listed(stack, viewer)}
    assert {MISSED, ROTATE} <= set(seen)
    mine = seen[ROTATE]
    assert mine.ping_url_issued and mine.ping_url_issued_by == "hb-mgr"
    assert mine.service_id == "hb-svc" and mine.interval.seconds == 3600
    assert secret.encode() not in mine.SerializeToString()
    assert not {MISSED, ROTATE} & {h.heartbeat_id for h in await listed(stack, outsider)}
    async with stack.channel("alert-ingest", "") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await heartbeat_service_pb2_grpc.HeartbeatServiceStub(channel).ListHeartbeats(
                heartbeat_service_pb2.ListHeartbeatsRequest()
            )
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Issuing is audited, allowed or not.
    async with stack.channel("escalation") as channel:
        records = (
            await auth_service_pb2_grpc.AuthServiceStub(channel).ListAudit(
                auth_service_pb2.ListAuditRequest(action="heartbeat.rotate", resource_id=ROTATE)
            )
        ).records
    decisions = {(r.actor, r.allowed) for r in records}
    assert {("hb-viewer", False), ("hb-resp", False), ("hb-mgr", True)} <= decisions
    assert all(r.service == "alert-ingest" for r in records)


async def test_a_refused_ping_does_not_count_and_the_issued_url_resolves(
    stack: Stack, alerts: TopicReader
) -> None:
    manager, _ = await stack.token_for("hb-mgr")
    url = (await issue(stack, manager, MISSED)).ping_url
    dedup_key = f"heartbeat:{MISSED}"
    base = f"{stack.ingest_url}/v1/heartbeats/{MISSED}"
    wrong = [
        f"{base}/ping",  # the unauthenticated URL of before
        f"{base}/ping/hbs_{'A' * 43}",  # a wrong secret
        url + "x",
        url.replace(MISSED, ROTATE),  # this secret on another monitor
    ]
    async with aiohttp.ClientSession() as session:
        assert await ping(session, url) == 200
        pinged_at = time.monotonic()
        # Refused pings all along the interval and past it: none of them keeps it quiet.
        while time.monotonic() - pinged_at < 3.0:
            for bad in wrong:
                assert await ping(session, bad) == 404
            await asyncio.sleep(0.25)
        (missed,) = await alerts.wait_for(
            lambda a: a.dedup_key == dedup_key and a.action == alert_pb2.ALERT_ACTION_TRIGGER,
            timeout=10,
        )
        assert missed.service_id == "hb-svc"
        async with session.get(url) as r:
            assert r.status == 200
            assert (await r.json())["resolved"] is True
        await alerts.wait_for(
            lambda a: a.dedup_key == dedup_key and a.action == alert_pb2.ALERT_ACTION_RESOLVE,
            timeout=10,
        )
    viewer, _ = await stack.token_for("hb-viewer")
    (state,) = [h for h in await listed(stack, viewer) if h.heartbeat_id == MISSED]
    assert state.HasField("last_ping_at")


async def test_rotation_voids_the_old_url_at_once_or_after_the_overlap(stack: Stack) -> None:
    manager, _ = await stack.token_for("hb-mgr")
    first = (await issue(stack, manager, ROTATE)).ping_url
    async with aiohttp.ClientSession() as session:
        assert await ping(session, first) == 200
        second = (await issue(stack, manager, ROTATE)).ping_url
        assert second != first
        assert await ping(session, first) == 404  # rotated: void at once
        assert await ping(session, second) == 200
        third = await issue(stack, manager, ROTATE, overlap_s=60)
        assert third.HasField("previous_valid_until")
        assert await ping(session, second) == 200  # still valid for a minute
        assert await ping(session, third.ping_url) == 200
        assert await ping(session, first) == 404
    viewer, _ = await stack.token_for("hb-viewer")
    (state,) = [h for h in await listed(stack, viewer) if h.heartbeat_id == ROTATE]
    assert state.previous_url_valid_until == third.previous_valid_until


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tocsin_ingest.issue_ping_url", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TOCSIN_TOKEN"},
    )


async def test_the_cli_make_up_runs_issues_every_url_once_into_private_files(
    stack: Stack, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(stack.admin_token)
    out = tmp_path / "heartbeats"
    common = ["--target", stack.grpc_target("alert-ingest"), "--token-file", str(token_file)]
    made = await asyncio.to_thread(
        run_cli, "--all", "--keep-existing", "--out-dir", str(out), *common
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""  # secrets go to the files only
    url_file = out / f"{MISSED}.url"
    url = url_file.read_text().strip()
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    assert {f"{MISSED}.url", f"{ROTATE}.url"} <= {p.name for p in out.iterdir()}
    async with aiohttp.ClientSession() as session:
        assert await ping(session, url) == 200
        # Run again (a restart of `make up`): the URLs it wrote stay, and keep working.
        again = await asyncio.to_thread(
            run_cli, "--all", "--keep-existing", "--out-dir", str(out), *common
        )
        assert again.returncode == 0, again.stderr
        assert url_file.read_text().strip() == url
        assert await ping(session, url) == 200
    # Without a credential it says what to do.
    refused = await asyncio.to_thread(run_cli, MISSED, "--target", common[1])
    assert refused.returncode != 0 and "TOCSIN_TOKEN" in refused.stderr
