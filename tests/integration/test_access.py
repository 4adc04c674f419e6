"""Identity and access against the running services (stack_config/50-access.yaml).

Every mutating RPC is refused without a credential and with too weak a role, and allowed
with the right one; the actor recorded is the token's principal, whatever the request says;
a token revoked at runtime stops working at once; every decision lands on the audit topic.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from tocsin.v1 import (
    auth_pb2,
    auth_service_pb2,
    auth_service_pb2_grpc,
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
    oncall_service_pb2,
    oncall_service_pb2_grpc,
    silence_service_pb2,
    silence_service_pb2_grpc,
)
from tocsin_common.auth.policy import PrincipalKind, Role
from tocsin_common.timeutil import set_timestamp

from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

SRE_KEY = "itauthsre00000000000000000000001"
Call = Callable[[grpc.aio.Channel], Awaitable[Any]]


async def open_incident(stack: Stack, key: str = SRE_KEY) -> incident_pb2.Incident:
    title = f"access {os.urandom(4).hex()}"
    body = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": title,
        "payload": {"summary": title, "source": "access-tests", "severity": "critical"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.ingest_url}/v2/enqueue", json=body) as response,
    ):
        assert response.status == 202, await response.text()
    async with stack.channel("escalation") as channel:
        stub = incident_service_pb2_grpc.IncidentServiceStub(channel)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = await stub.List(incident_service_pb2.ListIncidentsRequest(limit=1000))
            for incident in listed.incidents:
                if incident.title == title:
                    return incident
            await asyncio.sleep(0.2)
    raise AssertionError(f"no incident {title!r}\n{stack.logs()}")


def window(hours: float = 1) -> tuple[Any, Any]:
    start, end = (
        datetime.now(UTC) + timedelta(days=30),
        datetime.now(UTC) + timedelta(days=30, hours=hours),
    )
    ts_start, ts_end = oncall_service_pb2.Override().start, oncall_service_pb2.Override().end
    set_timestamp(ts_start, start)
    set_timestamp(ts_end, end)
    return ts_start, ts_end


def silence(service_id: str) -> silence_service_pb2.CreateSilenceRequest:
    s = silence_service_pb2.Silence(
        service_id=service_id,
        matchers=[silence_service_pb2.Matcher(name='alertname="x"')],
        created_by="mallory",
        comment="access test",
    )
    set_timestamp(s.ends_at, datetime.now(UTC) + timedelta(hours=1))
    return silence_service_pb2.CreateSilenceRequest(silence=s)


def mutations(incident_id: str) -> dict[str, tuple[str, Call]]:
    """Every mutating RPC, as (service, call) with a valid request."""
    start, end = window()
    override = oncall_service_pb2.Override(
        schedule_id="auth-sched", user_id="auth-resp", start=start, end=end
    )
    until = incident_service_pb2.SnoozeRequest().until
    set_timestamp(until, datetime.now(UTC) + timedelta(hours=1))

    def inc(ch: grpc.aio.Channel) -> incident_service_pb2_grpc.IncidentServiceStub:
        return incident_service_pb2_grpc.IncidentServiceStub(ch)

    def oncall(ch: grpc.aio.Channel) -> oncall_service_pb2_grpc.OnCallServiceStub:
        return oncall_service_pb2_grpc.OnCallServiceStub(ch)

    ref = incident_service_pb2.IncidentRef(incident_id=incident_id, actor="mallory")
    return {
        "Acknowledge": ("escalation", lambda ch: inc(ch).Acknowledge(ref)),
        "Resolve": ("escalation", lambda ch: inc(ch).Resolve(ref)),
        "Snooze": (
            "escalation",
            lambda ch: inc(ch).Snooze(
                incident_service_pb2.SnoozeRequest(incident_id=incident_id, until=until)
            ),
        ),
        "AddNote": (
            "escalation",
            lambda ch: inc(ch).AddNote(
                incident_service_pb2.AddNoteRequest(incident_id=incident_id, text="hi")
            ),
        ),
        "SetPriority": (
            "escalation",
            lambda ch: inc(ch).SetPriority(
                incident_service_pb2.SetPriorityRequest(incident_id=incident_id, priority="P2")
            ),
        ),
        "Reassign": (
            "escalation",
            lambda ch: inc(ch).Reassign(
                incident_service_pb2.ReassignRequest(incident_id=incident_id, user_id="auth-resp")
            ),
        ),
        "CreateOverride": (
            "escalation",
            lambda ch: oncall(ch).CreateOverride(
                oncall_service_pb2.CreateOverrideRequest(override=override)
            ),
        ),
        "DeleteOverride": (
            "escalation",
            lambda ch: oncall(ch).DeleteOverride(
                oncall_service_pb2.DeleteOverrideRequest(schedule_id="auth-sched", override_id="x")
            ),
        ),
        "CreateSilence": (
            "correlation",
            lambda ch: silence_service_pb2_grpc.SilenceServiceStub(ch).CreateSilence(
                silence("auth-sre-svc")
            ),
        ),
        "ExpireSilence": (
            "correlation",
            lambda ch: silence_service_pb2_grpc.SilenceServiceStub(ch).ExpireSilence(
                silence_service_pb2.ExpireSilenceRequest(silence_id="x")
            ),
        ),
        "SendTestNotification": (
            "notification",
            lambda ch: notification_service_pb2_grpc.NotificationServiceStub(
                ch
            ).SendTestNotification(
                notification_service_pb2.SendTestNotificationRequest(
                    user_id="auth-outsider", contact_method_id="olga-sms"
                )
            ),
        ),
        "CreateToken": (
            "escalation",
            lambda ch: auth_service_pb2_grpc.AuthServiceStub(ch).CreateToken(
                auth_service_pb2.CreateTokenRequest(subject_id="auth-admin", name="x")
            ),
        ),
        "RevokeToken": (
            "escalation",
            lambda ch: auth_service_pb2_grpc.AuthServiceStub(ch).RevokeToken(
                auth_service_pb2.RevokeTokenRequest(token_id="tok_x")
            ),
        ),
        "GetContactMethod": (
            "escalation",
            lambda ch: oncall(ch).GetContactMethod(
                oncall_service_pb2.GetContactMethodRequest(
                    user_id="auth-outsider", contact_method_id="olga-sms"
                )
            ),
        ),
    }


async def code_of(stack: Stack, service: str, call: Call, token: str) -> grpc.StatusCode:
    async with stack.channel(service, token) as channel:
        try:
            await call(channel)
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


async def test_every_mutation_is_refused_without_a_credential(stack: Stack) -> None:
    incident = await open_incident(stack)
    refused = {}
    for name, (service, call) in mutations(incident.incident_id).items():
        for token in ("", "tocsin_" + "x" * 43, "not-a-token"):
            refused[(name, token[:8])] = await code_of(stack, service, call, token)
    assert set(refused.values()) == {grpc.StatusCode.UNAUTHENTICATED}, refused
    # notification read the on-call person's contact with its service credential: paged.
    deadline = time.monotonic() + 20
    while not [
        p
        for p in list(stack.pages.requests)
        if p.path == "/pages/auth-resp" and incident.title in p.body.decode(errors="replace")
    ]:
        assert time.monotonic() < deadline, f"auth-resp was not paged\n{stack.logs()}"
        await asyncio.sleep(0.2)
    # And nothing happened: the incident is still triggered.
    async with stack.channel("escalation") as channel:
        got = await incident_service_pb2_grpc.IncidentServiceStub(channel).Get(
            incident_service_pb2.GetIncidentRequest(incident_id=incident.incident_id)
        )
    assert got.status == incident_pb2.INCIDENT_STATUS_TRIGGERED


async def test_too_weak_a_role_is_denied_with_the_reason(stack: Stack) -> None:
    incident = await open_incident(stack)
    calls = mutations(incident.incident_id)
    viewer, _ = await stack.token_for("auth-viewer")
    responder, _ = await stack.token_for("auth-resp")
    outsider, _ = await stack.token_for("auth-outsider")
    manager_read_only, _ = await stack.token_for("auth-mgr", scope=Role.VIEWER)
    bot, _ = await stack.token_for("auth-bot", PrincipalKind.SERVICE_ACCOUNT)
    denied = {
        ("Acknowledge", "viewer"): viewer,
        ("AddNote", "viewer"): viewer,
        ("SetPriority", "viewer"): viewer,
        ("Resolve", "service account with viewer"): bot,
        ("CreateSilence", "responder"): responder,
        ("CreateSilence", "manager with a viewer-scoped token"): manager_read_only,
        ("SendTestNotification", "responder of another team's user"): responder,
        ("GetContactMethod", "responder of another team's user"): responder,
        ("CreateToken", "responder, for someone else"): responder,
    }
    for (name, who), token in denied.items():
        service, call = calls[name]
        async with stack.channel(service, token) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call(channel)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, (name, who, e.value)
        assert "needs" in (e.value.details() or ""), (name, who, e.value.details())
    # Another team's responder cannot even see the incident: NOT_FOUND, not a hint.
    service, call = calls["Acknowledge"]
    assert await code_of(stack, service, call, outsider) == grpc.StatusCode.NOT_FOUND


async def test_the_actor_recorded_is_the_tokens_principal(stack: Stack) -> None:
    incident = await open_incident(stack)
    responder, _ = await stack.token_for("auth-resp")
    async with stack.channel("escalation", responder) as channel:
        stub = incident_service_pb2_grpc.IncidentServiceStub(channel)
        await stub.AddNote(
            incident_service_pb2.AddNoteRequest(
                incident_id=incident.incident_id, actor="mallory", text="looking"
            )
        )
        await stub.Acknowledge(
            incident_service_pb2.IncidentRef(incident_id=incident.incident_id, actor="mallory")
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            timeline = await stub.Timeline(
                incident_service_pb2.TimelineRequest(incident_id=incident.incident_id)
            )
            by_type = {e.type: e for e in timeline.events}
            if incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED in by_type:
                break
            await asyncio.sleep(0.2)
    acked = by_type[incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED]
    assert acked.actor == "auth-resp"
    assert all(e.actor != "mallory" for e in timeline.events)


async def test_roles_reach_their_teams_resources(stack: Stack) -> None:
    manager, _ = await stack.token_for("auth-mgr")
    responder, _ = await stack.token_for("auth-resp")
    admin, _ = await stack.token_for("auth-admin")
    # A manager silences their team's service; created_by is the manager, not the request's.
    async with stack.channel("correlation", manager) as channel:
        stub = silence_service_pb2_grpc.SilenceServiceStub(channel)
        created = await stub.CreateSilence(silence("auth-sre-svc"))
        listed = await stub.ListSilences(silence_service_pb2.ListSilencesRequest())
        mine = [s for s in listed.silences if s.silence_id == created.silence_id]
        assert [s.created_by for s in mine] == ["auth-mgr"]
        # ... but not the other team's, nor every service at once (admin only).
        for service_id in ("auth-other-svc", ""):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.CreateSilence(silence(service_id))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.ExpireSilence(
            silence_service_pb2.ExpireSilenceRequest(silence_id=created.silence_id)
        )
    # A responder puts themselves on call, and deletes that override; not someone else.
    start, end = window()
    async with stack.channel("escalation", responder) as channel:
        stub = oncall_service_pb2_grpc.OnCallServiceStub(channel)
        own = await stub.CreateOverride(
            oncall_service_pb2.CreateOverrideRequest(
                override=oncall_service_pb2.Override(
                    schedule_id="auth-sched", user_id="auth-resp", start=start, end=end
                )
            )
        )
        assert own.created_by == "auth-resp"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.CreateOverride(
                oncall_service_pb2.CreateOverrideRequest(
                    override=oncall_service_pb2.Override(
                        schedule_id="auth-sched", user_id="auth-mgr", start=start, end=end
                    )
                )
            )
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.DeleteOverride(
            oncall_service_pb2.DeleteOverrideRequest(
                schedule_id="auth-sched", override_id=own.override_id
            )
        )
        # Their own contact methods, yes; another team's person's, no.
        mine = await stub.GetContactMethod(
            oncall_service_pb2.GetContactMethodRequest(
                user_id="auth-resp", contact_method_id="ada-hook"
            )
        )
        assert mine.address.endswith("/pages/auth-resp")
        batch = await stub.GetContactMethods(
            oncall_service_pb2.GetContactMethodsRequest(
                lookups=[
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id="auth-resp", contact_method_id="ada-hook"
                    ),
                    oncall_service_pb2.GetContactMethodRequest(
                        user_id="auth-outsider", contact_method_id="olga-sms"
                    ),
                ]
            )
        )
        kinds = [r.WhichOneof("result") for r in batch.results]
        assert kinds == ["contact_method", "error"]
        assert batch.results[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    # The manager of the team manages anyone's overrides on its schedule.
    async with stack.channel("escalation", manager) as channel:
        other = await oncall_service_pb2_grpc.OnCallServiceStub(channel).CreateOverride(
            oncall_service_pb2.CreateOverrideRequest(
                override=oncall_service_pb2.Override(
                    schedule_id="auth-sched", user_id="auth-viewer", start=start, end=end
                )
            )
        )
        await oncall_service_pb2_grpc.OnCallServiceStub(channel).DeleteOverride(
            oncall_service_pb2.DeleteOverrideRequest(
                schedule_id="auth-sched", override_id=other.override_id
            )
        )
    # An admin silences every service at once.
    async with stack.channel("correlation", admin) as channel:
        stub2 = silence_service_pb2_grpc.SilenceServiceStub(channel)
        everything = await stub2.CreateSilence(silence(""))
        await stub2.ExpireSilence(
            silence_service_pb2.ExpireSilenceRequest(silence_id=everything.silence_id)
        )


async def test_tokens_made_over_the_api_work_until_revoked(stack: Stack) -> None:
    responder, _ = await stack.token_for("auth-resp")
    async with stack.channel("escalation", responder) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        me = await auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert me.id == "auth-resp" and me.kind == auth_pb2.PRINCIPAL_KIND_USER
        assert [(r.team_id, r.role) for r in me.team_roles] == [
            ("auth-sre", auth_pb2.ROLE_RESPONDER)
        ]
        made = await auth.CreateToken(
            auth_service_pb2.CreateTokenRequest(
                name="laptop", scope=auth_pb2.ROLE_VIEWER, ttl=Duration(seconds=3600)
            )
        )
        assert made.token.startswith("tocsin_") and made.info.subject_id == "auth-resp"
        listed = await auth.ListTokens(auth_service_pb2.ListTokensRequest())
        assert made.info.token_id in [t.token_id for t in listed.tokens]
        assert all(made.token not in str(t) for t in listed.tokens)  # never shown again
    async with stack.channel("escalation", made.token) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        me = await auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert me.scope == auth_pb2.ROLE_VIEWER and me.token_id == made.info.token_id
        async with stack.channel("escalation", responder) as owner:
            await auth_service_pb2_grpc.AuthServiceStub(owner).RevokeToken(
                auth_service_pb2.RevokeTokenRequest(token_id=made.info.token_id)
            )
        revoked_at = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await auth.WhoAmI(auth_service_pb2.WhoAmIRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - revoked_at < 1.0


async def test_every_decision_is_on_the_audit_topic(stack: Stack) -> None:
    incident = await open_incident(stack)
    viewer, _ = await stack.token_for("auth-viewer")
    responder, _ = await stack.token_for("auth-resp")
    service, call = mutations(incident.incident_id)["Resolve"]
    assert await code_of(stack, service, call, "") == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(stack, service, call, viewer) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stack, service, call, responder) == grpc.StatusCode.OK
    service, call = mutations(incident.incident_id)["SetPriority"]
    assert await code_of(stack, service, call, viewer) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stack, service, call, responder) == grpc.StatusCode.OK
    async with stack.channel("escalation") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        records = (
            await auth.ListAudit(
                auth_service_pb2.ListAuditRequest(resource_id=incident.incident_id, limit=1000)
            )
        ).records
        anonymous = (
            await auth.ListAudit(
                auth_service_pb2.ListAuditRequest(actor="anonymous", denied_only=True)
            )
        ).records
    decisions = {(r.actor, r.action, r.allowed) for r in records}
    assert ("auth-viewer", "incident.resolve", False) in decisions
    assert ("auth-resp", "incident.resolve", True) in decisions
    assert ("auth-viewer", "incident.priority", False) in decisions
    assert ("auth-resp", "incident.priority", True) in decisions
    methods = {"incident.resolve": "Resolve", "incident.priority": "SetPriority"}
    for record in records:
        assert record.service == "escalation" and record.peer and len(record.trace_id) == 32
        assert record.method == f"/tocsin.v1.IncidentService/{methods[record.action]}"
    assert any(r.action == "/tocsin.v1.IncidentService/Resolve" for r in anonymous)
    # Reading the audit log is for admins alone.
    async with stack.channel("escalation", responder) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await auth_service_pb2_grpc.AuthServiceStub(channel).ListAudit(
                auth_service_pb2.ListAuditRequest()
            )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_streams_and_reads_need_a_credential_too(stack: Stack) -> None:
    async with stack.channel("escalation", "") as channel:
        stub = incident_service_pb2_grpc.IncidentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in stub.Watch(incident_service_pb2.WatchRequest()):
                break
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.List(incident_service_pb2.ListIncidentsRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_watch_ends_once_its_token_is_revoked(stack: Stack) -> None:
    token, token_id = await stack.token_for("auth-resp")
    async with stack.channel("escalation", token) as channel:
        stream = incident_service_pb2_grpc.IncidentServiceStub(channel).Watch(
            incident_service_pb2.WatchRequest(service_ids=["auth-sre-svc"])
        )
        first = await open_incident(stack)

        async def next_for(incident_id: str | None) -> Any:
            while True:
                item = await stream.read()
                assert item is not grpc.aio.EOF
                if incident_id is None or item.event.incident.incident_id == incident_id:
                    return item

        await asyncio.wait_for(next_for(first.incident_id), 30)
        async with stack.channel("escalation", token) as owner:
            await auth_service_pb2_grpc.AuthServiceStub(owner).RevokeToken(
                auth_service_pb2.RevokeTokenRequest(token_id=token_id)
            )
        await asyncio.sleep(1.1)  # past the stream's re-check interval
        second = await open_incident(stack)
        # Events made before the revocation may still arrive; the stream then ends, and the
        # new incident, made after it, never reaches the revoked token.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await asyncio.wait_for(next_for(second.incident_id), 30)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
