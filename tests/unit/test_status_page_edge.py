"""The status page's edges without the other services: the page assembled from escalation's
and insight's answers (pure), served as HTML and Statuspage-shaped JSON with a strict CSP,
briefly cached, without internal data; status updates posted over REST."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from tocsin.v1 import (
    incident_pb2,
    incident_service_pb2,
    insight_service_pb2,
    silence_service_pb2,
)
from tocsin_api.app import create_app
from tocsin_api.deps import ApiState
from tocsin_api.settings import ApiSettings
from tocsin_api.status.assemble import assemble, component_uptime, maintenances_of, summary
from tocsin_common.auth.access import AuthFailure
from tocsin_common.auth.policy import Principal, PrincipalKind, Role
from tocsin_common.config.loader import parse_config
from tocsin_common.statuspage.components import ComponentOverride
from tocsin_common.statuspage.events import public_id, updates_of

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONFIG = parse_config(
    """
version: 1
services:
  - id: checkout-svc
    name: Checkout
    team: shop
    escalation_policy: p
    maintenance_windows:
      - start: "2026-06-01T11:00:00Z"
        end: "2026-06-01T13:00:00Z"
        description: Database upgrade
  - {id: payments-svc, name: Payments, escalation_policy: p}
  - {id: search-svc, name: Search, escalation_policy: p}
  - id: internal-svc
    name: Internal
    escalation_policy: p
    maintenance_windows:
      - start: "2026-06-01T11:00:00Z"
        end: "2026-06-01T13:00:00Z"
        description: reboot k8s-namespace-prod nodes
teams:
  - {id: shop, name: Shop, members: [mia], viewers: [val]}
users:
  - {id: mia, name: Mia, email: mia@example.com}
  - {id: val, name: Val, email: val@example.com}
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: mia}]}]}
status_page:
  enabled: true
  title: Acme status
  components:
    - {id: cmp-shop, name: Web shop, group: Shop, services: [checkout-svc, search-svc]}
    - {id: cmp-pay, name: Payments, services: [payments-svc]}
"""
)
SECRET = b"k" * 32
INTERNAL = [
    "inc-pay-internal",
    "inc-search-internal",
    "payments-svc",
    "checkout-svc",
    "OOMKilled payments-7d9",
    "responder-mia",
    "cmp-pay",
    "cmp-shop",
    "k8s-namespace-prod",
    "win-internal-1",
    "rotate the pg primary, ticket OPS-4411",
]


def _stamp(at: datetime) -> Any:
    incident = incident_pb2.Incident()
    incident.created_at.FromDatetime(at)
    return incident.created_at


def incident(incident_id: str, service: str, *, low: bool = False) -> incident_pb2.Incident:
    made = incident_pb2.Incident(
        incident_id=incident_id,
        service_id=service,
        title="OOMKilled payments-7d9",
        status=incident_pb2.INCIDENT_STATUS_TRIGGERED,
        urgency=incident_pb2.URGENCY_LOW if low else incident_pb2.URGENCY_HIGH,
        labels={"namespace": "k8s-namespace-prod"},
        assigned_user_id="responder-mia",
    )
    made.created_at.CopyFrom(_stamp(NOW - timedelta(minutes=30)))
    return made


def posted(
    of: incident_pb2.Incident, status: str, message: str, minutes: int, title: str = ""
) -> incident_pb2.IncidentEvent:
    event = incident_pb2.IncidentEvent(
        event_id=f"e-{minutes}",
        type=incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED,
        incident=of,
        actor="responder-mia",
        message=f"status update ({status}): {message}",
        status_update=incident_pb2.PublicStatusUpdate(
            status=status, message=message, public_title=title or "Card payments failing"
        ),
    )
    event.at.CopyFrom(_stamp(NOW - timedelta(minutes=minutes)))
    return event


def facts() -> incident_service_pb2.StatusPageResponse:
    pay = incident("inc-pay-internal", "payments-svc")
    search = incident("inc-search-internal", "search-svc", low=True)
    note = incident_pb2.IncidentEvent(
        type=incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED, incident=pay, message="internal note"
    )
    return incident_service_pb2.StatusPageResponse(
        open=[pay, search],
        updated=[
            incident_service_pb2.StatusPageIncident(
                incident=pay,
                updates=[
                    note,
                    posted(pay, "investigating", "We are looking into failed card payments.", 20),
                    posted(pay, "identified", "A <b>fix</b> is <script>rolling</script> out.", 5),
                ],
            )
        ],
    )


def test_updates_are_read_from_status_updated_events_only() -> None:
    found = updates_of(facts().updated[0].updates)
    assert [u.status for u in found] == ["investigating", "identified"]
    assert found[0].posted_at == NOW - timedelta(minutes=20)
    assert found[1].public_title == "Card payments failing"
    bogus = posted(incident("i", "s"), "exploded", "x", 1)
    assert updates_of([bogus]) == []  # not a Statuspage status: never shown


def test_the_page_from_open_incidents_maintenance_and_uptime() -> None:
    page = assemble(
        CONFIG,
        facts(),
        {"payments-svc": 0.9951, "checkout-svc": 0.999, "search-svc": 1.0},
        NOW,
        SECRET,
    )
    states = {c.name: c.state for c in page.components}
    # Payments: its open high-urgency incident (partial_outage by default). Web shop: the
    # low-urgency search incident (degraded) beats checkout's maintenance in progress.
    assert states == {"Web shop": "degraded_performance", "Payments": "partial_outage"}
    assert page.state == "partial_outage"
    uptime = {c.name: c.uptime_percent for c in page.components}
    assert uptime == {"Web shop": 99.9, "Payments": 99.51}  # a component: its worst service
    (shown,) = page.incidents  # the search incident has no public update: not shown
    assert shown.id == public_id("inc-pay-internal", SECRET) and len(shown.id) == 16
    assert shown.title == "Card payments failing" and shown.status == "identified"
    assert [u.status for u in shown.updates] == ["identified", "investigating"]  # newest first
    assert shown.components == ("Payments",)
    (maintenance,) = page.maintenances
    assert maintenance.title == "Database upgrade" and maintenance.in_progress
    assert maintenance.components == ("Web shop",)


def test_the_summary_is_statuspage_shaped_and_holds_nothing_internal() -> None:
    page = assemble(CONFIG, facts(), {"payments-svc": 0.99}, NOW, SECRET)
    body = summary(page, "https://status.example/status")
    assert body["status"] == {"indicator": "major", "description": "Partial System Outage"}
    assert body["page"]["name"] == "Acme status"
    assert [c["status"] for c in body["components"]] == ["degraded_performance", "partial_outage"]
    (item,) = body["incidents"]
    assert item["name"] == "Card payments failing" and item["impact"] == "partial_outage"
    assert [u["status"] for u in item["incident_updates"]] == ["identified", "investigating"]
    assert body["scheduled_maintenances"][0]["status"] == "in_progress"
    dumped = json.dumps(body)
    for value in [*INTERNAL, "internal note"]:
        assert value not in dumped, value


def test_uptime_of_components_and_maintenance_of_the_config() -> None:
    assert component_uptime(CONFIG, {}) == {}
    assert component_uptime(CONFIG, {"search-svc": 0.5}) == {"cmp-shop": 50.0}
    (window,) = maintenances_of(CONFIG)  # internal-svc is on no component: not shown
    assert window.services == frozenset({"checkout-svc"})


# --- served over HTTP ---------------------------------------------------------------


@dataclass
class FakeConfig:
    current: Any = CONFIG


class FakeAuthenticator:
    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        if authorization == "Bearer mia":
            return Principal("mia", PrincipalKind.USER, team_roles={"shop": Role.RESPONDER})
        if authorization == "Bearer val":
            return Principal("val", PrincipalKind.USER, team_roles={"shop": Role.VIEWER})
        return AuthFailure("unknown, revoked or expired token")


class MemoryOverrides:
    def __init__(self) -> None:
        self.kept: dict[str, ComponentOverride] = {}

    async def all(self) -> dict[str, ComponentOverride]:
        return dict(self.kept)

    async def set(self, override: ComponentOverride, now: datetime) -> None:
        self.kept[override.component_id] = override

    async def remove(self, component_id: str) -> bool:
        return self.kept.pop(component_id, None) is not None


def runtime_window(
    window_id: str, service: str, start_min: int, end_min: int, public_title: str = ""
) -> silence_service_pb2.PublicMaintenanceWindow:
    window = silence_service_pb2.PublicMaintenanceWindow(
        window_id=window_id, service_id=service, public_title=public_title
    )
    window.starts_at.CopyFrom(_stamp(NOW + timedelta(minutes=start_min)))
    window.ends_at.CopyFrom(_stamp(NOW + timedelta(minutes=end_min)))
    return window


@dataclass
class Calls:
    made: list[tuple[str, Any, str]] = field(default_factory=list)
    uptime_fails: bool = False
    maintenance_fails: bool = False
    windows: list[silence_service_pb2.PublicMaintenanceWindow] = field(default_factory=list)


class FakeIncidents:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def StatusPage(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.made.append(("StatusPage", request, dict(metadata)["authorization"]))
        return facts()

    async def SetImpact(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.made.append(("SetImpact", request, dict(metadata)["authorization"]))
        return incident_service_pb2.CommandAccepted(command_id="cmd-impact")

    async def PostStatusUpdate(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.made.append(("PostStatusUpdate", request, dict(metadata)["authorization"]))
        return incident_service_pb2.PostStatusUpdateResponse(
            command_id="cmd-1",
            update=incident_pb2.PublicStatusUpdate(
                status=request.status, message="cleaned [redacted]", public_title="T"
            ),
            redactions=["email"],
        )


class FakeInsight:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def Uptime(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.made.append(("Uptime", request, dict(metadata)["authorization"]))
        if self.calls.uptime_fails:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return insight_service_pb2.UptimeResponse(
            services=[
                insight_service_pb2.ServiceUptime(service_id=s, availability=0.998)
                for s in request.service_ids
            ]
        )


class FakeSilences:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def StatusMaintenance(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.made.append(("StatusMaintenance", request, dict(metadata)["authorization"]))
        if self.calls.maintenance_fails:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return silence_service_pb2.StatusMaintenanceResponse(windows=self.calls.windows)


@dataclass
class FakeBackends:
    incidents: FakeIncidents
    insight: FakeInsight
    silences: FakeSilences


def client(
    calls: Calls, config: Any = CONFIG, overrides: MemoryOverrides | None = None
) -> tuple[TestClient, list[float]]:
    clock = [NOW.timestamp()]
    store = overrides or MemoryOverrides()
    state = ApiState(
        config=FakeConfig(config),
        authenticator=FakeAuthenticator(),
        backends=FakeBackends(  # type: ignore[arg-type]
            FakeIncidents(calls), FakeInsight(calls), FakeSilences(calls)
        ),
        settings=ApiSettings.from_env({"TOCSIN_API_PUBLIC_URL": "https://ops.example"}),
        feeds=lambda: None,  # type: ignore[arg-type,return-value]
        service_credential=lambda: "svc-cred",
        console_secret="s" * 32,
        clock=lambda: clock[0],
        status_overrides=lambda: store,
    )
    return TestClient(create_app(state), raise_server_exceptions=False), clock


def test_the_html_page_needs_no_login_has_a_strict_csp_and_escapes_messages() -> None:
    calls = Calls()
    http, _ = client(calls)
    reply = http.get("/status")
    assert reply.status_code == 200, reply.text
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # no script at all
    assert reply.headers["cache-control"] == "public, max-age=10"
    html = reply.text
    assert "<script" not in html
    assert "A &lt;b&gt;fix&lt;/b&gt; is &lt;script&gt;rolling&lt;/script&gt; out." in html
    assert "Card payments failing" in html and "Database upgrade" in html
    assert "99.800 % uptime (90 days)" in html
    # Times read as a person reads them; the exact instant stays machine-readable.
    assert '<time datetime="2026-06-01T11:40:00Z">1 Jun 2026, 11:40 UTC</time>' in html
    assert "Updated <time datetime=\"2026-06-01T12:00:00Z\">1 Jun 2026, 12:00 UTC</time>" in html
    for value in INTERNAL:
        assert value not in html, value
    # Read with the api's own credential, never a visitor's
    assert {c[2] for c in calls.made} == {"Bearer svc-cred"}
    uptime = next(c[1] for c in calls.made if c[0] == "Uptime")
    assert uptime.until.ToDatetime(tzinfo=UTC) - uptime.since.ToDatetime(tzinfo=UTC) == (
        timedelta(days=90)
    )


def test_the_json_summary_and_the_brief_cache() -> None:
    calls = Calls()
    http, clock = client(calls)
    body = http.get("/status/api/v2/summary.json").json()
    assert body["page"]["url"] == "https://ops.example/status"
    assert body["incidents"][0]["name"] == "Card payments failing"
    assert http.get("/status").status_code == 200
    # built once for both
    assert [c[0] for c in calls.made] == ["StatusPage", "Uptime", "StatusMaintenance"]
    clock[0] += 9.9
    assert http.get("/status").status_code == 200
    assert len(calls.made) == 3
    clock[0] += 0.2  # ten seconds after it was built: built again
    assert http.get("/status").status_code == 200
    assert [c[0] for c in calls.made] == ["StatusPage", "Uptime", "StatusMaintenance"] * 2


def test_without_insight_the_page_still_shows_states() -> None:
    http, _ = client(Calls(uptime_fails=True))
    body = http.get("/status/api/v2/summary.json").json()
    assert [c["uptime_percent"] for c in body["components"]] == [None, None]
    assert body["status"]["indicator"] == "major"


def test_a_disabled_status_page_is_404() -> None:
    off = CONFIG.model_copy(
        update={"status_page": CONFIG.status_page.model_copy(update={"enabled": False})}
    )
    calls = Calls()
    http, _ = client(calls, off)
    assert http.get("/status").status_code == 404
    assert calls.made == []


def test_a_status_update_over_rest() -> None:
    calls = Calls()
    http, _ = client(calls)
    mia = {"Authorization": "Bearer mia"}
    reply = http.post(
        "/api/v1/incidents/inc-1/status_updates",
        json={"status": "identified", "message": "mail ops@example.com", "public_title": "T"},
        headers=mia,
    )
    assert reply.status_code == 202, reply.text
    assert reply.json() == {
        "incident_id": "inc-1",
        "command_id": "cmd-1",
        "status": "identified",
        "message": "cleaned [redacted]",
        "public_title": "T",
        "redactions": ["email"],
    }
    (made,) = calls.made
    assert made[0] == "PostStatusUpdate" and made[2] == "Bearer mia"  # the caller's own
    assert made[1].incident_id == "inc-1" and made[1].message == "mail ops@example.com"
    bad = http.post(
        "/api/v1/incidents/inc-1/status_updates",
        json={"status": "fixed", "message": "x"},
        headers=mia,
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "status"
    assert len(calls.made) == 1
    assert http.post("/api/v1/incidents/inc-1/status_updates", json={}).status_code == 401


@pytest.mark.parametrize("path", ["/status", "/status/api/v2/summary.json"])
def test_the_page_is_served_without_credentials(path: str) -> None:
    http, _ = client(Calls())
    assert http.get(path).status_code == 200


def test_a_responder_overrides_a_component_until_a_time_then_it_is_derived_again() -> None:
    store = MemoryOverrides()
    http, clock = client(Calls(), overrides=store)
    mia, val = {"Authorization": "Bearer mia"}, {"Authorization": "Bearer val"}
    route = "/api/v1/status_page/components/cmp-shop/override"
    until = (NOW + timedelta(minutes=30)).isoformat()
    shop = lambda: http.get("/status/api/v2/summary.json").json()["components"][0]  # noqa: E731
    assert shop()["status"] == "degraded_performance"  # derived (and now cached)

    assert http.put(route, json={"state": "major_outage"}, headers=val).status_code == 403
    reply = http.put(route, json={"state": "major_outage", "until": until}, headers=mia)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "component_id": "cmp-shop",
        "state": "major_outage",
        "actor": "mia",
        "until": "2026-06-01T12:30:00Z",
    }
    assert shop()["status"] == "major_outage"  # the cache was dropped for it
    clock[0] += 31 * 60  # past its until (and the cache's 10 s)
    assert shop()["status"] == "degraded_performance"

    assert http.put(route, json={"state": "operational"}, headers=mia).status_code == 200
    assert shop()["status"] == "operational"
    assert http.delete(route, headers=mia).status_code == 204
    assert shop()["status"] == "degraded_performance"
    assert http.delete(route, headers=mia).status_code == 404  # nothing left to remove


def test_override_requests_are_checked() -> None:
    http, _ = client(Calls())
    mia = {"Authorization": "Bearer mia"}
    base = "/api/v1/status_page/components"
    unknown = http.put(f"{base}/nope/override", json={"state": "major_outage"}, headers=mia)
    assert unknown.status_code == 404 and "component_id" in unknown.json()["detail"]
    bad = http.put(f"{base}/cmp-shop/override", json={"state": "on_fire"}, headers=mia)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "state"
    past = http.put(
        f"{base}/cmp-shop/override",
        json={"state": "major_outage", "until": "2026-06-01T11:00:00Z"},
        headers=mia,
    )
    assert past.status_code == 400 and past.json()["errors"][0]["field"] == "until"
    # cmp-pay's service belongs to no team: only admins may override it
    assert (
        http.put(f"{base}/cmp-pay/override", json={"state": "operational"}, headers=mia)
    ).status_code == 403
    assert http.put(f"{base}/cmp-shop/override", json={"state": "operational"}).status_code == 401


# --- runtime maintenance windows on the page ----------------------------------------------


def test_runtime_windows_show_by_their_public_title_and_put_components_under_maintenance() -> None:
    windows = [
        # In progress on payments (its open incident is worse: partial_outage stays).
        runtime_window("win-internal-1", "payments-svc", -10, 50, "Card network upgrade"),
        # Upcoming, no public title: "Scheduled maintenance", never its internal comment.
        runtime_window("win-internal-2", "search-svc", 60, 120),
        # In 40 days: beyond the 30 days shown. On no component: never shown.
        runtime_window("win-internal-3", "search-svc", 40 * 24 * 60, 40 * 24 * 60 + 60, "Later"),
        runtime_window("win-internal-4", "internal-svc", -10, 50, "reboot k8s-namespace-prod"),
    ]
    quiet = incident_service_pb2.StatusPageResponse()  # no open incident
    page = assemble(CONFIG, quiet, {}, NOW, SECRET, windows=windows)
    states = {c.name: c.state for c in page.components}
    # Web shop: checkout's planned window (config) in progress; Payments: the runtime one.
    assert states == {"Web shop": "under_maintenance", "Payments": "under_maintenance"}
    shown = [(m.title, m.in_progress, m.components) for m in page.maintenances]
    assert shown == [
        ("Database upgrade", True, ("Web shop",)),
        ("Card network upgrade", True, ("Payments",)),
        ("Scheduled maintenance", False, ("Web shop",)),
    ]
    body = summary(page, "https://status.example/status")
    assert [m["name"] for m in body["scheduled_maintenances"]] == [
        "Database upgrade",
        "Card network upgrade",
        "Scheduled maintenance",
    ]
    assert body["scheduled_maintenances"][2]["status"] == "scheduled"
    assert body["status"]["indicator"] == "maintenance"
    with_incident = assemble(CONFIG, facts(), {}, NOW, SECRET, windows=windows)
    assert {c.name: c.state for c in with_incident.components}["Payments"] == "partial_outage"
    dumped = json.dumps(body)
    for value in [*INTERNAL, "win-internal-2", "win-internal-4", "Later"]:
        assert value not in dumped, value


def test_the_served_page_shows_runtime_windows_and_survives_correlation_down() -> None:
    calls = Calls(
        windows=[runtime_window("win-internal-1", "payments-svc", -5, 55, "Card upgrade")]
    )
    http, _ = client(calls)
    body = http.get("/status/api/v2/summary.json").json()
    assert "Card upgrade" in [m["name"] for m in body["scheduled_maintenances"]]
    made = next(c for c in calls.made if c[0] == "StatusMaintenance")
    assert made[2] == "Bearer svc-cred"  # the api's own credential (status_page.read)
    down = Calls(maintenance_fails=True)
    http, _ = client(down)
    reply = http.get("/status/api/v2/summary.json")
    assert reply.status_code == 200
    assert [m["name"] for m in reply.json()["scheduled_maintenances"]] == ["Database upgrade"]


# --- an incident's impact set by hand -------------------------------------------------------


def test_a_responder_set_impact_drives_the_component_and_the_incident_on_the_page() -> None:
    answer = facts()
    answer.open[0].impact = "major_outage"  # payments (high urgency: partial_outage otherwise)
    answer.updated[0].incident.impact = "major_outage"
    answer.open[1].impact = "operational"  # search (low: degraded otherwise): no impact
    page = assemble(CONFIG, answer, {}, NOW, SECRET)
    states = {c.name: c.state for c in page.components}
    assert states == {"Web shop": "under_maintenance", "Payments": "major_outage"}
    assert page.incidents[0].impact == "major_outage"
    assert summary(page, "u")["status"]["indicator"] == "critical"
    answer.open[0].impact = "not-an-impact"  # what a newer build might store: the urgency's
    page = assemble(CONFIG, answer, {}, NOW, SECRET)
    assert {c.name: c.state for c in page.components}["Payments"] == "partial_outage"


def test_setting_and_clearing_an_impact_over_rest() -> None:
    calls = Calls()
    http, _ = client(calls)
    mia = {"Authorization": "Bearer mia"}
    route = "/api/v1/incidents/inc-1/impact"
    reply = http.put(route, json={"impact": "major_outage"}, headers=mia)
    assert reply.status_code == 202, reply.text
    assert reply.json() == {
        "incident_id": "inc-1",
        "command_id": "cmd-impact",
        "impact": "major_outage",
    }
    cleared = http.put(route, json={"impact": None}, headers=mia)
    assert cleared.status_code == 202 and cleared.json()["impact"] is None
    made = [c for c in calls.made if c[0] == "SetImpact"]
    assert [(c[1].incident_id, c[1].impact, c[2]) for c in made] == [
        ("inc-1", "major_outage", "Bearer mia"),  # the caller's own credential
        ("inc-1", "", "Bearer mia"),
    ]
    bad = http.put(route, json={"impact": "on_fire"}, headers=mia)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "impact"
    assert http.put(route, json={}, headers=mia).status_code == 400  # say it, even if null
    assert http.put(route, json={"impact": "major_outage"}).status_code == 401
    assert len([c for c in calls.made if c[0] == "SetImpact"]) == 2


def test_readable_time_is_to_the_minute_in_utc() -> None:
    from tocsin_common.statuspage.public import readable_time

    assert readable_time("2026-12-05T01:27:09.955169Z") == "5 Dec 2026, 01:27 UTC"
    assert readable_time("2026-01-09T23:59:59+00:00") == "9 Jan 2026, 23:59 UTC"
    assert readable_time("2026-03-29T01:30:00+02:00") == "28 Mar 2026, 23:30 UTC"
