"""correlation end to end, as stories: alerts produced on alerts.normalized (and changes on
`changes`) by a test producer, incident events read back from incidents.events, pages seen
by the recording peer. Every page of these services goes to corr-carol."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin.v1 import silence_service_pb2 as spb
from tocsin.v1 import silence_service_pb2_grpc as spb_grpc
from tocsin_common.timeutil import set_timestamp

from tests.integration.harness import ServiceProcess, Stack, free_port

pytestmark = pytest.mark.integration
T = incident_pb2
Event = incident_pb2.IncidentEvent


def new_alert(
    service: str,
    key: str,
    action: str = "trigger",
    summary: str = "",
    severity: int = alert_pb2.SEVERITY_CRITICAL,
    event_id: str = "",
    **labels: str,
) -> alert_pb2.Alert:
    alert = alert_pb2.Alert(
        event_id=event_id or str(uuid.uuid4()),
        service_id=service,
        dedup_key=key,
        action={
            "trigger": alert_pb2.ALERT_ACTION_TRIGGER,
            "resolve": alert_pb2.ALERT_ACTION_RESOLVE,
            "acknowledge": alert_pb2.ALERT_ACTION_ACKNOWLEDGE,
        }[action],
        severity=severity,
        summary=summary or key,
        source="tests",
        labels=labels,
    )
    set_timestamp(alert.received_time, datetime.now(UTC))
    return alert


async def produce(stack: Stack, *alerts: alert_pb2.Alert, topic: str = "alerts.normalized") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for alert in alerts:
            await producer.send(topic, alert.SerializeToString(), key=alert.service_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def events_until(
    stack: Stack,
    service: str,
    done: Callable[[list[Event]], bool],
    timeout: float = 30.0,
) -> list[Event]:
    """incidents.events of one service, read from the start until ``done`` says enough."""
    consumer = AIOKafkaConsumer(
        "incidents.events", bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Event] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    event = Event()
                    event.ParseFromString(record.value or b"")
                    if event.incident.service_id == service:
                        found.append(event)
            if done(found):
                return found
    finally:
        await consumer.stop()
    raise AssertionError(f"timed out; {service} events: {[(e.type, e.message) for e in found]}")


def of_type(kind: int, n: int = 1, title: str | None = None) -> Callable[[list[Event]], bool]:
    return lambda evs: (
        sum(1 for e in evs if e.type == kind and (title is None or e.incident.title == title)) >= n
    )


def pages_titled(stack: Stack, title: str) -> list[object]:
    return [p for p in stack.pages.requests if p.json()["incident"]["title"] == title]


async def test_alerts_with_equal_content_group_into_one_incident(stack: Stack) -> None:
    title = f"group {uuid.uuid4()}"
    alerts = [new_alert("corr-group", f"g-{i}-{title}", summary=title) for i in range(3)]
    await produce(stack, *alerts)
    events = await events_until(
        stack, "corr-group", of_type(T.INCIDENT_EVENT_TYPE_ALERT_ADDED, 2, title)
    )
    mine = [e for e in events if e.incident.title == title]
    assert len({e.incident.incident_id for e in mine}) == 1
    assert mine[-1].incident.alert_count == 3
    await stack.pages.wait_for(1, timeout=20)
    await asyncio.sleep(2)
    assert len(pages_titled(stack, title)) == 1
    # All three resolve: the incident resolves.
    await produce(stack, *[new_alert("corr-group", f"g-{i}-{title}", "resolve") for i in range(3)])
    events = await events_until(
        stack, "corr-group", of_type(T.INCIDENT_EVENT_TYPE_RESOLVED, 1, title)
    )
    resolved = [e for e in events if e.type == T.INCIDENT_EVENT_TYPE_RESOLVED]
    assert resolved[-1].incident.open_alert_count == 0


async def test_a_silence_made_over_grpc_prevents_the_page(stack: Stack) -> None:
    title = f"silenced {uuid.uuid4()}"
    ends = datetime.now(UTC) + timedelta(hours=1)
    silence = spb.Silence(
        service_id="corr-silence",
        matchers=[spb.Matcher(name=f'{{summary="{title}", severity=~"critical|error"}}')],
        created_by="corr-carol",
        comment="known issue",
    )
    set_timestamp(silence.ends_at, ends)
    async with stack.channel("correlation") as channel:
        stub = spb_grpc.SilenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CreateSilence(spb.CreateSilenceRequest(silence=spb.Silence()))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "matchers" in (bad.value.details() or "")
        created = await stub.CreateSilence(spb.CreateSilenceRequest(silence=silence))
        listed = await stub.ListSilences(spb.ListSilencesRequest(service_id="corr-silence"))
        assert created.silence_id in [s.silence_id for s in listed.silences]
        await asyncio.sleep(1.5)  # the worker's snapshot refreshes every second
        await produce(stack, new_alert("corr-silence", f"s1-{title}", summary=title))
        events = await events_until(
            stack, "corr-silence", of_type(T.INCIDENT_EVENT_TYPE_SUPPRESSED, 1, title)
        )
        suppressed = [e for e in events if e.incident.title == title][-1].incident
        assert suppressed.suppressed and created.silence_id in suppressed.suppressed_reason
        await asyncio.sleep(3)
        assert pages_titled(stack, title) == []
        # Expired: the next alert pages.
        await stub.ExpireSilence(spb.ExpireSilenceRequest(silence_id=created.silence_id))
        active = await stub.ListSilences(spb.ListSilencesRequest(service_id="corr-silence"))
        assert created.silence_id not in [s.silence_id for s in active.silences]
    await asyncio.sleep(1.5)
    await produce(stack, new_alert("corr-silence", f"s2-{title}", summary=title))
    await events_until(stack, "corr-silence", of_type(T.INCIDENT_EVENT_TYPE_TRIGGERED, 1, title))
    for _ in range(100):
        if pages_titled(stack, title):
            break
        await asyncio.sleep(0.2)
    assert len(pages_titled(stack, title)) == 1


def limits_silence(*matchers: str, comment: str = "", silence_id: str = "") -> spb.Silence:
    silence = spb.Silence(
        silence_id=silence_id,
        service_id="corr-limits",
        matchers=[spb.Matcher(name=m) for m in matchers],
        comment=comment,
    )
    set_timestamp(silence.ends_at, datetime.now(UTC) + timedelta(hours=1))
    return silence


async def test_the_silence_service_enforces_its_limits(stack: Stack) -> None:
    # stack_config/10-correlation.yaml: active_silences_per_service 5, silence_retention 3s.
    never = f'summary="never {uuid.uuid4()}"'
    refused = [
        (limits_silence(never, comment="c" * 1001), "limits.silence_comment_max_chars"),
        (limits_silence("{" + ", ".join([never] * 33) + "}"), "limits.silence_max_matchers"),
        (limits_silence('summary=~"' + "v" * 1001 + '"'), "limits.matcher_value_max_chars"),
        (limits_silence('summary=~"(a+)\\1"'), "invalid regular expression"),
        (limits_silence('summary=~"(?=a)a"'), "RE2 syntax"),
    ]
    async with stack.channel("correlation") as channel:
        stub = spb_grpc.SilenceServiceStub(channel)
        for silence, named in refused:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.CreateSilence(spb.CreateSilenceRequest(silence=silence))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert named in (bad.value.details() or "")
        # A ReDoS pattern is accepted and costs nothing: RE2 runs in linear time.
        title = f"redos {uuid.uuid4()}"
        redos = await stub.CreateSilence(
            spb.CreateSilenceRequest(
                silence=limits_silence(f'summary="{title}"', 'text!~"(a|a)*b"')
            )
        )
        ids = [redos.silence_id]
        for _ in range(4):
            created = await stub.CreateSilence(
                spb.CreateSilenceRequest(silence=limits_silence(never))
            )
            ids.append(created.silence_id)
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await stub.CreateSilence(spb.CreateSilenceRequest(silence=limits_silence(never)))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limits.active_silences_per_service" in (full.value.details() or "")
        # Replacing one of them is not one more.
        await stub.CreateSilence(
            spb.CreateSilenceRequest(silence=limits_silence(never, silence_id=ids[1]))
        )
        # The ReDoS matcher fails to match 10,000 a's in linear time, so the alert is silenced
        # at once (on Python's re that one evaluation would run for ages).
        await asyncio.sleep(1.5)  # the worker's snapshot refreshes every second
        await produce(stack, new_alert("corr-limits", title, summary=title, text="a" * 10_000))
        events = await events_until(
            stack, "corr-limits", of_type(T.INCIDENT_EVENT_TYPE_SUPPRESSED, 1, title), timeout=15
        )
        suppressed = [e for e in events if e.incident.title == title][-1].incident
        assert suppressed.suppressed and redos.silence_id in suppressed.suppressed_reason
        # Expired silences are listed during their retention, then deleted.
        for silence_id in ids:
            await stub.ExpireSilence(spb.ExpireSilenceRequest(silence_id=silence_id))
        await stub.CreateSilence(spb.CreateSilenceRequest(silence=limits_silence(never)))
        listed = await stub.ListSilences(
            spb.ListSilencesRequest(service_id="corr-limits", include_expired=True)
        )
        assert set(ids) <= {s.silence_id for s in listed.silences}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = await stub.ListSilences(
                spb.ListSilencesRequest(service_id="corr-limits", include_expired=True)
            )
            if not set(ids) & {s.silence_id for s in listed.silences}:
                break
            await asyncio.sleep(0.5)
        assert not set(ids) & {s.silence_id for s in listed.silences}


def suppressed_event(events: list[Event], title: str) -> Event:
    """The SUPPRESSED event of the incident titled `title`: events of other incidents of
    the service, and other services' timeline entries, may come after it."""
    return next(
        e
        for e in reversed(events)
        if e.type == T.INCIDENT_EVENT_TYPE_SUPPRESSED and e.incident.title == title
    )


async def test_a_maintenance_window_suppresses(stack: Stack) -> None:
    title = f"maint {uuid.uuid4()}"
    await produce(stack, new_alert("corr-maint", f"m-{title}", summary=title))
    events = await events_until(
        stack, "corr-maint", of_type(T.INCIDENT_EVENT_TYPE_SUPPRESSED, 1, title)
    )
    suppressed = suppressed_event(events, title)
    assert "maintenance window" in suppressed.incident.suppressed_reason
    await asyncio.sleep(3)
    assert pages_titled(stack, title) == []


async def test_inhibition_by_a_firing_source(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    source = new_alert(
        "corr-inhibit", f"node-{run}", summary=f"node {run}", alertname="NodeDown", host=run
    )
    target = new_alert(
        "corr-inhibit",
        f"disk-{run}",
        summary=f"disk {run}",
        severity=alert_pb2.SEVERITY_WARNING,
        host=run,
    )
    await produce(stack, source, target)
    events = await events_until(
        stack, "corr-inhibit", of_type(T.INCIDENT_EVENT_TYPE_SUPPRESSED, 1, f"disk {run}")
    )
    suppressed = suppressed_event(events, f"disk {run}")
    assert "inhibited by alert node-" in suppressed.incident.suppressed_reason
    await asyncio.sleep(3)
    assert pages_titled(stack, f"disk {run}") == []
    assert len(pages_titled(stack, f"node {run}")) == 1


async def test_a_downstream_incident_is_held_then_released(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    await produce(stack, new_alert("corr-db", f"db-{run}", summary=f"db {run}"))
    await events_until(stack, "corr-db", of_type(T.INCIDENT_EVENT_TYPE_TRIGGERED, 1, f"db {run}"))
    await produce(stack, new_alert("corr-app", f"app-{run}", summary=f"app {run}"))
    events = await events_until(
        stack, "corr-app", of_type(T.INCIDENT_EVENT_TYPE_HELD, 1, f"app {run}")
    )
    held = [e for e in events if e.incident.title == f"app {run}"][-1].incident
    assert held.held_by_incident_id
    await asyncio.sleep(2)
    assert pages_titled(stack, f"app {run}") == []
    # The upstream resolves while the downstream is still open: released, triggered.
    await produce(stack, new_alert("corr-db", f"db-{run}", "resolve"))
    events = await events_until(
        stack, "corr-app", of_type(T.INCIDENT_EVENT_TYPE_RELEASED, 1, f"app {run}"), timeout=20
    )
    released = [e for e in events if e.type == T.INCIDENT_EVENT_TYPE_RELEASED][-1].incident
    assert released.held_by_incident_id == ""
    assert released.status == T.INCIDENT_STATUS_TRIGGERED


async def test_changes_are_listed_as_probable_causes(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    changes = []
    for service, minutes in (("corr-chgup", 2), ("corr-chg", 10), ("corr-chg", 90)):
        change = alert_pb2.ChangeEvent(
            event_id=f"{run}-{service}-{minutes}", service_id=service, summary=f"deploy {minutes}"
        )
        set_timestamp(change.timestamp, datetime.now(UTC) - timedelta(minutes=minutes))
        changes.append(change)
    await produce(stack, *changes, topic="changes")  # type: ignore[arg-type]
    await asyncio.sleep(2)  # another topic: give its agent time before the alert
    await produce(stack, new_alert("corr-chg", f"c-{run}", summary=f"chg {run}"))
    events = await events_until(
        stack, "corr-chg", of_type(T.INCIDENT_EVENT_TYPE_TRIGGERED, 1, f"chg {run}")
    )
    causes = [e for e in events if e.incident.title == f"chg {run}"][-1].incident.probable_causes
    ours = [c for c in causes if c.change.event_id.startswith(run)]
    assert [c.change.event_id for c in ours] == [f"{run}-corr-chg-10", f"{run}-corr-chgup-2"]
    assert ours[0].reason.startswith("same service") and ours[0].rank < ours[1].rank


async def test_a_flapping_alert_is_marked_and_stops_paging(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    title = f"flap {run}"
    alerts = [
        new_alert("corr-flap", f"f-{run}", "trigger" if i % 2 == 0 else "resolve", summary=title)
        for i in range(30)
    ]
    await produce(stack, *alerts)
    events = await events_until(
        stack,
        "corr-flap",
        lambda evs: sum(1 for e in evs if e.alert.dedup_key == f"f-{run}") >= 30,
    )
    mine = [e for e in events if e.alert.dedup_key == f"f-{run}"]
    flapping = [e for e in mine if e.type == T.INCIDENT_EVENT_TYPE_FLAPPING]
    assert len(flapping) == 1 and flapping[0].incident.flapping
    triggered = [e for e in mine if e.type == T.INCIDENT_EVENT_TYPE_TRIGGERED]
    assert len(triggered) <= 6  # 15 triggers, paging stopped once it flapped
    await asyncio.sleep(3)
    # at most one page per incident opened before it flapped (notification may bundle them)
    assert len(pages_titled(stack, title)) <= len({e.incident.incident_id for e in triggered})


async def test_a_killed_worker_recovers_its_tables(stack: Stack) -> None:
    # corr-restart is in maintenance: its incidents are recorded (SUPPRESSED), never paged,
    # so this volume does not page anyone while other suites run.
    run = uuid.uuid4().hex[:8]
    first = [new_alert("corr-restart", f"r-{run}-{i}") for i in range(150)]
    second = [new_alert("corr-restart", f"r-{run}-{i}") for i in range(150, 300)]
    await produce(stack, *first)
    producing = asyncio.create_task(produce(stack, *second))
    await asyncio.sleep(0.3)
    await stack.restart("correlation", signal.SIGKILL)  # mid-stream
    await producing
    # The same keys again after the restart: duplicates of open alerts, not new incidents.
    repeats = [new_alert("corr-restart", f"r-{run}-{i}") for i in range(0, 300, 30)]
    await produce(stack, *repeats)
    repeat_ids = {a.event_id for a in repeats}

    def complete(evs: list[Event]) -> bool:
        keys = {e.alert.dedup_key for e in evs if e.type == T.INCIDENT_EVENT_TYPE_SUPPRESSED}
        dups = {e.alert.event_id for e in evs if e.alert.event_id in repeat_ids}
        return len([k for k in keys if k.startswith(f"r-{run}-")]) == 300 and dups == repeat_ids

    events = await events_until(stack, "corr-restart", complete, timeout=90)
    mine = [e for e in events if e.alert.dedup_key.startswith(f"r-{run}-")]
    incidents_by_key: dict[str, set[str]] = {}
    for e in mine:
        incidents_by_key.setdefault(e.alert.dedup_key, set()).add(e.incident.incident_id)
    assert len(incidents_by_key) == 300  # no alert lost
    assert all(len(ids) == 1 for ids in incidents_by_key.values())  # no incident duplicated
    for e in mine:
        if e.alert.event_id in repeat_ids:
            assert e.type == T.INCIDENT_EVENT_TYPE_ALERT_UPDATED  # dedup continued


async def test_two_workers_give_the_same_incidents_as_one(stack: Stack) -> None:
    base = stack.services["correlation"]
    grpc_port = free_port()
    env = {
        **base.env,
        "TOCSIN_GRPC_PORT": str(grpc_port),
        "TOCSIN_METRICS_PORT": str(free_port()),
        "TOCSIN_DATA_DIR": base.env["TOCSIN_DATA_DIR"] + "-2",
    }
    second = ServiceProcess(
        "correlation-2", base.module, env, base.log_path.with_name("correlation-2.log"), grpc_port
    )
    run = uuid.uuid4().hex[:8]
    services = [f"corr-pair{i}" for i in range(1, 7)]
    alerts = [new_alert(services[i % len(services)], f"p-{run}-{i}") for i in range(240)]
    second.start()
    try:
        await produce(stack, *alerts[:120])
        await second.wait_healthy()
        await produce(stack, *alerts[120:])
        expected = {a.dedup_key for a in alerts}
        seen: dict[str, set[str]] = {}
        for service in set(services):
            want = {a.dedup_key for a in alerts if a.service_id == service}

            def enough(evs: list[Event], want: set[str] = want) -> bool:
                return want <= {e.alert.dedup_key for e in evs}

            events = await events_until(stack, service, enough, timeout=90)
            for e in events:
                if e.alert.dedup_key.startswith(f"p-{run}-"):
                    seen.setdefault(e.alert.dedup_key, set()).add(e.incident.incident_id)
        assert set(seen) == expected
        # Ids derive from the input, so whichever worker processed an alert, its incident is
        # the one a single worker would have opened — exactly one per alert.
        from tocsin_correlation.engine import derived_id

        by_key = {a.dedup_key: a.event_id for a in alerts}
        for key, ids in seen.items():
            assert ids == {derived_id(by_key[key], "incident")}
    finally:
        second.kill(signal.SIGTERM)
