"""The web console's pure parts (the sealed session, CSRF, forms, view models) and its
HTTP edge without the other services: sign-in redirects, the token sign-in, the cookie's
flags, the security headers, CSRF refusal before any call, server-side authorisation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tocsin_api.app import create_app
from tocsin_api.console import views
from tocsin_api.console.security import CSP
from tocsin_api.console.session import (
    SESSION_COOKIE,
    FormError,
    Sealer,
    csrf_ok,
    derive_key,
    looks_like_token,
    new_session,
    open_session,
    parse_form,
    safe_next,
    seal_session,
)
from tocsin_api.deps import ApiState
from tocsin_api.settings import ApiSettings
from tocsin_common.auth.access import AuthFailure
from tocsin_common.auth.policy import Principal, PrincipalKind, Role

from tests.unit.test_api import FakeConfig, NoBackends

KEY = derive_key("a-console-secret-of-some-length")


def test_a_sealed_session_opens_only_unchanged_with_its_key_and_purpose() -> None:
    sealer = Sealer(KEY)
    session = new_session("tocsin_abc", "token", now=1000.0, lifetime_s=60)
    sealed = seal_session(sealer, session)
    assert "tocsin_abc" not in sealed  # the credential is encrypted, not just signed
    assert open_session(sealer, sealed, now=1010.0) == session
    assert open_session(sealer, sealed, now=1060.0) is None  # expired
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    assert open_session(sealer, flipped, now=1010.0) is None
    assert open_session(Sealer(derive_key("another-secret-entirely!")), sealed, 1010.0) is None
    assert sealer.open("tocsin_login", sealed) is None  # a session is no login cookie
    assert open_session(sealer, "", 1010.0) is None and open_session(sealer, "!!", 1.0) is None
    with pytest.raises(ValueError, match="16 characters"):
        derive_key("short")


def test_csrf_tokens_compare_exactly() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok("abc", None) and not csrf_ok("", "")


def test_forms_parse_only_as_urlencoded() -> None:
    fields = parse_form(b"id=a&id=b&csrf=x&q=", "application/x-www-form-urlencoded; charset=utf-8")
    assert fields == {"id": ["a", "b"], "csrf": ["x"], "q": [""]}
    with pytest.raises(FormError, match="application/x-www-form-urlencoded"):
        parse_form(b"{}", "application/json")
    with pytest.raises(FormError, match="UTF-8"):
        parse_form(b"a=\xff\xfe", "application/x-www-form-urlencoded")


def test_after_sign_in_only_console_paths() -> None:
    assert safe_next("/console/incidents/x") == "/console/incidents/x"
    for bad in ("https://evil.example/", "//evil.example/console/", "/api/v1/tokens", None, ""):
        assert safe_next(bad) == "/console/"
    assert looks_like_token("tocsin_abc") and not looks_like_token("tocsin_")
    assert not looks_like_token("eyJhbGciOi")


def test_the_incident_filter_names_a_bad_field() -> None:
    chosen = views.parse_filter(
        {"status": ["triggered"], "urgency": ["high"], "q": [" disk "], "since_hours": ["24"]}
    )
    assert chosen.statuses == ("triggered",) and chosen.text == "disk"
    assert ("since_hours", "24") in chosen.query()
    for params, field in (
        ({"status": ["open"]}, "status"),
        ({"urgency": ["urgent"]}, "urgency"),
        ({"q": ["x" * 201]}, "q"),
        ({"since_hours": ["-1"]}, "since_hours"),
    ):
        with pytest.raises(views.FormProblem) as caught:
            views.parse_filter(params)
        assert caught.value.field == field


INCIDENTS: list[dict[str, Any]] = [
    {
        "id": "i1",
        "title": "Disk full",
        "status": "triggered",
        "urgency": "low",
        "service_id": "db",
        "created_at": "2026-12-04T09:00:00Z",
        "labels": {"host": "db-1"},
    },
    {
        "id": "i2",
        "title": "API down",
        "status": "acknowledged",
        "urgency": "high",
        "service_id": "web",
        "created_at": "2026-12-04T10:00:00Z",
        "labels": {},
    },
    {
        "id": "i3",
        "title": "Old",
        "status": "resolved",
        "urgency": "high",
        "service_id": "web",
        "created_at": "2026-12-03T10:00:00Z",
        "labels": {},
    },
]


def test_text_search_counts_and_sorting() -> None:
    assert [i["id"] for i in INCIDENTS if views.matches_text(i, "DB-1")] == ["i1"]
    assert [i["id"] for i in INCIDENTS if views.matches_text(i, "web")] == ["i2", "i3"]
    assert views.status_counts(INCIDENTS) == {"triggered": 1, "acknowledged": 1, "resolved": 1}
    assert [i["id"] for i in views.sort_incidents(INCIDENTS, "newest")] == ["i2", "i1", "i3"]
    assert [i["id"] for i in views.sort_incidents(INCIDENTS, "urgency")] == ["i3", "i2", "i1"]
    assert [i["id"] for i in views.sort_incidents(INCIDENTS, "status")] == ["i1", "i2", "i3"]
    with pytest.raises(views.FormProblem, match="sort"):
        views.sort_incidents(INCIDENTS, "random")


RENDERED = {
    "layers": [
        {
            "name": "Days",
            "spans": [
                {
                    "start": "2026-12-06T22:00:00Z",
                    "end": "2026-12-07T08:00:00Z",
                    "user_ids": ["rita"],
                },
                {
                    "start": "2026-12-07T08:00:00Z",
                    "end": "2026-12-08T08:00:00Z",
                    "user_ids": ["dan"],
                },
            ],
        },
        {"name": "", "spans": []},
    ],
    "overrides": [
        {
            "id": "o-1",
            "user_id": "dan",
            "start": "2026-12-07T02:00:00Z",
            "end": "2026-12-07T04:10:00Z",
            "created_by": "rita",
            "from_config": False,
        },
        {
            "id": "config:0",
            "user_id": "rita",
            "start": "2026-12-08T12:00:00Z",
            "end": "2026-12-08T13:00:00Z",
            "created_by": None,
            "from_config": True,
        },
    ],
    "final_schedule": [
        {"start": "2026-12-07T00:00:00Z", "end": "2026-12-07T02:00:00Z", "user_ids": ["rita"]},
        {"start": "2026-12-07T02:00:00Z", "end": "2026-12-07T04:10:00Z", "user_ids": ["dan"]},
        {"start": "2026-12-07T04:10:00Z", "end": "2026-12-07T08:00:00Z", "user_ids": ["rita"]},
        {"start": "2026-12-07T08:00:00Z", "end": "2026-12-08T08:00:00Z", "user_ids": ["dan"]},
        {"start": "2026-12-08T08:00:00Z", "end": "2026-12-08T12:00:00Z", "user_ids": []},
        {"start": "2026-12-08T12:00:00Z", "end": "2026-12-08T13:00:00Z", "user_ids": ["rita"]},
        {"start": "2026-12-08T13:00:00Z", "end": "2026-12-09T00:00:00Z", "user_ids": []},
    ],
}
NAMES = {"rita": "Rita", "dan": "Dan"}


def test_the_calendar_has_a_row_per_layer_the_overrides_and_the_final_schedule() -> None:
    since = views.datetime(2026, 12, 7, tzinfo=views.UTC)
    days = views.calendar(RENDERED, NAMES, since, since + views.timedelta(days=2))
    assert [d.iso for d in days] == ["2026-12-07", "2026-12-08"]
    assert days[0].title == "Monday 7 December 2026"
    assert [(r.name, r.kind) for r in days[0].rows] == [
        ("Days", "layer"),
        ("Layer 2", "layer"),  # an unnamed layer is known by its place
        ("Overrides", "overrides"),
        ("Final", "final"),
    ]
    layer, unnamed, overrides, final = days[0].rows
    # A shift from the day before starts at the day's first quarter hour; its own times
    # (what a screen reader hears) stay the whole shift's.
    assert [(b.who, b.first, b.last) for b in layer.blocks] == [("Rita", 0, 32), ("Dan", 32, 96)]
    assert layer.blocks[0].when == "from Sun 6 Dec 22:00 to Mon 7 Dec 08:00 UTC"
    assert layer.blocks[1].when == "from Mon 7 Dec 08:00 to Tue 8 Dec 08:00 UTC"
    assert unnamed.blocks == []
    # 04:10 ends inside the 17th quarter hour: the block covers it (rounded up).
    (override,) = overrides.blocks
    assert (override.who, override.first, override.last, override.override_id) == (
        "Dan",
        8,
        17,
        "o-1",
    )
    assert override.when == "from Mon 7 Dec 02:00 to 04:10 UTC"
    assert [(b.who, b.override) for b in final.blocks] == [
        ("Rita", False),
        ("Dan", True),  # the override's shift is marked in the final row
        ("Rita", False),
        ("Dan", False),
    ]
    assert final.blocks[1].classes == "blk s8 e17 p1 ovr"
    # People keep their colour in every row.
    assert {b.colour for b in final.blocks if b.who == "Rita"} == {layer.blocks[0].colour}
    # A person's shift that an override only begins is cut where the override ends.
    merged = {
        "overrides": [RENDERED["overrides"][0]],
        "final_schedule": [
            {"start": "2026-12-07T00:00:00Z", "end": "2026-12-07T02:00:00Z", "user_ids": []},
            {"start": "2026-12-07T02:00:00Z", "end": "2026-12-07T08:00:00Z", "user_ids": ["dan"]},
        ],
    }
    (day,) = views.calendar(merged, NAMES, since, since + views.timedelta(days=1))
    assert [(b.first, b.last, b.override) for b in day.rows[-1].blocks] == [
        (0, 8, False),
        (8, 17, True),
        (16, 32, False),  # 04:10 to 08:00: not the override's
    ]
    next_final = days[1].rows[-1]
    assert [(b.who, b.gap, b.first, b.last, b.override) for b in next_final.blocks] == [
        ("Dan", False, 0, 32, False),
        ("Gap: nobody on call", True, 32, 48, False),
        ("Rita", False, 48, 52, True),  # the config file's override
        ("Gap: nobody on call", True, 52, 96, False),
    ]
    assert next_final.blocks[1].classes == "blk s32 e48 gap"
    assert [b.from_config for b in days[1].rows[2].blocks] == [True]


def test_the_calendar_shows_only_the_days_asked_and_a_short_shift_one_quarter() -> None:
    since = views.datetime(2026, 12, 8, tzinfo=views.UTC)
    rendered = {
        "final_schedule": [
            {"start": "2026-12-08T10:00:00Z", "end": "2026-12-08T10:05:00Z", "user_ids": ["rita"]}
        ]
    }
    (day,) = views.calendar(rendered, NAMES, since, since + views.timedelta(days=1))
    assert [r.kind for r in day.rows] == ["overrides", "final"]
    (block,) = day.rows[-1].blocks
    assert (block.first, block.last) == (40, 41)


def test_override_rows_name_people_and_say_which_come_from_the_file() -> None:
    rows = views.override_rows(RENDERED, NAMES)
    assert rows[0] == {
        "id": "o-1",
        "who": "Dan",
        "start": "Mon 7 Dec 02:00",
        "end": "Mon 7 Dec 04:10",
        "created_by": "rita",
        "from_config": False,
    }
    assert rows[1]["from_config"] and rows[1]["created_by"] == ""


def test_form_values_parse_or_name_their_field() -> None:
    assert views.parse_instant("start", "2026-12-04T09:30").isoformat() == (
        "2026-12-04T09:30:00+00:00"
    )
    with pytest.raises(views.FormProblem, match=r"^end: "):
        views.parse_instant("end", "tomorrow")
    assert views.parse_minutes("minutes", "90", 100) == 5400
    with pytest.raises(views.FormProblem, match="minutes: a whole number"):
        views.parse_minutes("minutes", "0", 100)
    assert views.parse_matcher_lines('a="b"\n\n c!=d ') == ['a="b"', "c!=d"]
    with pytest.raises(views.FormProblem, match="matchers"):
        views.parse_matcher_lines("  \n")
    with pytest.raises(views.FormProblem, match="days"):
        views.schedule_range("", "40", views.datetime(2026, 12, 4, tzinfo=views.UTC))


def test_links_and_bulk_outcomes() -> None:
    assert views.safe_url("https://runbook/x") == "https://runbook/x"
    assert views.safe_url("javascript:alert(1)") == "" and views.safe_url("/relative") == ""
    ok = views.bulk_summary("resolve", [{"id": "a", "status": 202}])
    assert ok.kind == "ok" and ok.text == "resolve: 1 of 1 accepted"
    mixed = views.bulk_summary(
        "acknowledge", [{"id": "a", "status": 202}, {"id": "b", "status": 412, "detail": "stale"}]
    )
    assert mixed.kind == "error" and "b: stale" in mixed.text


class TokenAuthenticator:
    """'Bearer tocsin_rita' is Rita (responder on sre); anything else fails."""

    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        if authorization == "Bearer tocsin_rita":
            return Principal("rita", PrincipalKind.USER, team_roles={"sre": Role.RESPONDER})
        return AuthFailure("unknown, revoked or expired token")


@pytest.fixture
def web() -> TestClient:
    state = ApiState(
        config=FakeConfig(),
        authenticator=TokenAuthenticator(),
        backends=NoBackends(),  # type: ignore[arg-type]
        settings=ApiSettings.from_env({}),
        feeds=lambda: None,  # type: ignore[arg-type,return-value]
        console_secret="a-console-secret-of-some-length",
    )
    return TestClient(create_app(state), raise_server_exceptions=False, follow_redirects=False)


def sign_in(web: TestClient, token: str = "tocsin_rita") -> Any:
    page = web.get("/console/login?next=/console/policies")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return web.post(
        "/console/login",
        data={"csrf": csrf.group(1), "token": token, "next": "/console/policies"},
    )


def test_pages_need_a_session_and_carry_strict_headers(web: TestClient) -> None:
    assert web.get("/").headers["location"] == "/console/"
    for page in ("silences", "subscribers"):
        answer = web.get(f"/console/{page}")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/login?next=%2Fconsole%2F{page}"
    login = web.get("/console/login")
    assert login.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in login.text and " style=" not in login.text
    assert "content-security-policy" not in web.get("/healthz").headers  # the API's own


def test_token_sign_in_sets_a_sealed_http_only_lax_cookie(web: TestClient) -> None:
    refused = sign_in(web, "tocsin_nobody")
    assert refused.status_code == 401 and "unknown, revoked or expired" in refused.text
    answer = sign_in(web)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/policies"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert "tocsin_rita" not in cookie
    page = web.get("/console/policies")  # config-owned: no gRPC call
    assert page.status_code == 200 and "After 5.0 min" in page.text and "Rita" in page.text


def test_a_form_without_the_session_s_csrf_token_does_nothing(web: TestClient) -> None:
    sign_in(web)
    for data in ({"matchers": 'a="b"', "minutes": "5"}, {"csrf": "forged", "minutes": "5"}):
        refused = web.post("/console/silences", data=data)
        # NoBackends fails the request (500) if a gRPC call were made.
        assert refused.status_code == 403 and "CSRF" in refused.text
    for path in ("/console/subscribers", "/console/subscribers/some-id/delete"):
        refused = web.post(path, data={"csrf": "forged", "kind": "webhook", "address": "x"})
        assert refused.status_code == 403 and "CSRF" in refused.text, path


def test_a_login_without_its_form_token_is_refused(web: TestClient) -> None:
    web.get("/console/login")
    answer = web.post("/console/login", data={"csrf": "guess", "token": "tocsin_rita"})
    assert answer.status_code == 403 and SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_static_assets_are_served_and_the_js_is_small(web: TestClient) -> None:
    script = web.get("/console/static/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert len(script.content) < 200 * 1024
    assert "innerHTML" not in script.text  # incident text never becomes markup
    assert web.get("/console/static/console.css").status_code == 200


def test_oidc_sign_in_refuses_what_it_did_not_start(web: TestClient) -> None:
    # No access.oidc in this config: no OIDC button, and its start is a 404.
    assert 'id="oidc"' not in web.get("/console/login").text
    assert web.get("/console/auth/oidc").status_code == 404
    # A callback without this browser's sealed login (state, nonce, verifier) makes nothing.
    answer = web.get("/console/auth/callback?code=stolen&state=guessed")
    assert answer.status_code == 400 and "not started here" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_signing_out_needs_the_csrf_token_and_messages_are_not_reflected(
    web: TestClient,
) -> None:
    sign_in(web)
    assert web.post("/console/logout", data={"csrf": "guess"}).status_code == 403
    assert web.get("/console/policies").status_code == 200  # still signed in
    page = web.get("/console/policies")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    out = web.post("/console/logout", data={"csrf": csrf.group(1)})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert web.get("/console/policies").status_code == 303  # signed out
    assert "HACKED" not in web.get("/console/login?message=HACKED&next=/console/").text


def test_an_incident_as_it_was_at_a_time_from_its_timeline() -> None:
    entries = [
        {"at": "2026-12-04T09:00:00Z", "type": "triggered", "incident_status": "triggered"},
        {"at": "2026-12-04T09:05:00Z", "type": "acknowledged", "incident_status": "acknowledged"},
        {"at": "2026-12-04T09:30:00Z", "type": "resolved", "incident_status": "resolved"},
    ]
    at = views.parse_instant("at", "2026-12-04T09:10")
    past = views.as_of(entries, at)
    assert past.status == "acknowledged" and [e["type"] for e in past.entries] == [
        "triggered",
        "acknowledged",
    ]
    assert views.as_of(entries, views.parse_instant("at", "2026-12-04T08:59")).status == ""
    assert views.as_of(entries, views.parse_instant("at", "2026-12-04T09:30")).status == (
        "resolved"
    )


def test_a_silence_preview_matches_as_correlation_does() -> None:
    from tocsin.v1 import alert_pb2
    from tocsin_common.alert_labels import alert_labels
    from tocsin_common.config.model import Matcher

    disk = alert_pb2.Alert(
        service_id="db",
        summary="Disk full",
        severity=alert_pb2.SEVERITY_CRITICAL,
        labels={"alertname": "DiskFull"},
    )
    cpu = alert_pb2.Alert(service_id="web", summary="CPU hot", labels={"alertname": "CpuHot"})
    alerts = [
        (INCIDENTS[0], "Disk full", alert_labels(disk)),
        (INCIDENTS[1], "CPU hot", alert_labels(cpu)),
    ]
    by_name = [Matcher.model_validate('alertname=~"Disk.*"')]
    assert [m.incident_id for m in views.preview_matches(by_name, "", alerts)] == ["i1"]
    # Fields are labels too (an Events v2 alert has none), and the service narrows it.
    critical = [Matcher.model_validate('severity="critical"')]
    assert [m.alert for m in views.preview_matches(critical, "", alerts)] == ["Disk full"]
    assert views.preview_matches(critical, "web", alerts) == []


def test_recurring_and_related_incidents() -> None:
    this = {
        "id": "n",
        "title": "Disk full",
        "service_id": "db",
        "group_key": "g1",
        "created_at": "2026-12-04T10:00:00Z",
    }
    others = [
        this,
        {"id": "a", "title": "Disk full", "service_id": "db", "created_at": "2026-11-01T10:00:00Z"},
        {
            "id": "b",
            "title": "Other",
            "service_id": "db",
            "group_key": "g1",
            "created_at": "2026-10-01T10:00:00Z",
        },
        {
            "id": "c",
            "title": "Disk full",
            "service_id": "web",
            "created_at": "2026-12-04T10:10:00Z",
        },
        {"id": "d", "title": "Latency", "service_id": "web", "created_at": "2026-12-04T10:30:00Z"},
        {"id": "e", "title": "Latency", "service_id": "web", "created_at": "2026-12-04T12:00:00Z"},
        {"id": "f", "title": "Queue", "service_id": "mq", "created_at": "2026-12-04T09:30:00Z"},
        {"id": "g", "title": "Lock", "service_id": "db", "created_at": "2026-12-04T09:59:00Z"},
    ]
    again = views.recurring(this, others)
    assert [o["id"] for o in again] == ["a", "b"]  # same service; same title or group key
    # web depends on db: its incidents within the hour count; mq is unrelated.
    assert [o["id"] for o in views.related(this, others, ["web"], again)] == ["c", "d", "g"]


# --- Insight ----------------------------------------------------------------------------------


def _distribution(**values: float) -> dict[str, Any]:
    base = {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "max": 0.0}
    return {**base, **values}


def _row(**extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "period_start": None,
        "total_incident_count": 3,
        "seconds_to_first_ack": _distribution(count=2, mean=90, p50=60, p90=114, p95=117, max=120),
        "seconds_to_resolve": _distribution(count=3, mean=4000, p50=3725, p90=7200, max=7260),
        "seconds_to_engage": _distribution(),
        "seconds_to_mobilize": _distribution(),
        "escalation_rate": 0.5,
        "auto_resolved_share": 0.0,
        "alerts_per_incident": 1.25,
        "suppressed_share": 0.0,
        "total_notifications": 4,
        "total_escalations": 1,
        "total_reassignments": 0,
        "total_snoozed_seconds": 0.0,
    }
    return {**row, **extra}


def test_durations_read_as_people_read_them() -> None:
    assert [views.duration(s) for s in (0, 44.6, 60, 125, 3725, 90000, -3)] == [
        "0 s",
        "45 s",
        "1 min",
        "2 min 05 s",
        "1 h 02 min",
        "1 d 1 h",
        "0 s",
    ]


def test_the_insight_query_names_a_bad_field() -> None:
    q = views.parse_insight_query(
        {"team_id": ["api"], "period": ["week"], "since": ["2026-12-01T00:00"], "group": [""]}
    )
    assert (q.team_id, q.period, q.group) == ("api", "week", "")
    assert q.since_at is not None and q.since_at.tzinfo is not None
    assert q.query() == [
        ("group", ""),
        ("team_id", "api"),
        ("period", "week"),
        ("since", "2026-12-01T00:00"),
    ]
    assert views.parse_insight_query({}).group == "team"
    for params, field in (
        ({"period": ["year"]}, "period"),
        ({"group": ["user"]}, "group"),
        ({"since": ["yesterday"]}, "since"),
        ({"since": ["2026-12-02T00:00"], "until": ["2026-12-01T00:00"]}, "until"),
    ):
        with pytest.raises(views.FormProblem) as caught:
            views.parse_insight_query(params)
        assert caught.value.field == field


def test_a_distribution_chart_is_inline_svg_scaled_to_its_max_without_style() -> None:
    svg = views.distribution_svg(_distribution(p50=60, p90=120, p95=180, max=240), 'MTTA <"x">')
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "style" not in svg  # the CSP allows no inline style: colours are classes
    widths = [
        float(w)
        for w in re.findall(r'<rect class="chart-bar [^"]+" x="\d+" y="\d+" width="([\d.]+)"', svg)
    ]
    track = views.CHART_W - views.CHART_LABEL
    assert widths == [track / 4, track / 2, track * 3 / 4, track]
    assert (
        'aria-label="MTTA &lt;&quot;x&quot;&gt;: p50 1 min, p90 2 min, p95 3 min, max 4 min"' in svg
    )
    assert '<"x">' not in svg
    empty = views.distribution_svg(_distribution(), "nothing")
    assert re.findall(r'<rect [^>]*width="([\d.]+)"', empty) == ["0.0"] * 4


def test_a_report_group_shows_readable_figures_and_its_label() -> None:
    group = views.InsightGroup.of(_row(team_id="api"), "team", {"api": "API team"})
    assert (group.label, group.total) == ("API team", 3)
    mtta = group.kpis[0]
    assert mtta.title.startswith("Time to acknowledge") and mtta.count == 2
    assert dict(mtta.figures) == {
        "mean": "1 min 30 s",
        "p50": "1 min",
        "p90": "1 min 54 s",
        "p95": "1 min 57 s",
        "max": "2 min",
    }
    assert "<svg" in mtta.chart
    assert {text for _, text in group.kpis[2].figures} == {"—"}  # nobody engaged: no value
    whole = views.InsightGroup.of(_row(period_start="2026-12-01T00:00:00Z"), "", {})
    assert whole.label == "All incidents from 2026-12-01 00:00 UTC"
    assert views.InsightGroup.of(_row(service_id=""), "service", {}).label == "(no service)"


def test_report_rows_as_csv_with_formulas_defused() -> None:
    report = {"group_by": ["service"], "data": [_row(service_id="=HYPERLINK(1)")]}
    rows = views.report_csv_rows(report)
    header, row = rows
    assert header[:3] == ["service_id", "period_start", "total_incident_count"]
    assert len(header) == len(row) == 3 + 3 * 6 + len(views.RATES)
    cells = dict(zip(header, row, strict=True))
    assert cells["service_id"] == "'=HYPERLINK(1)"
    assert cells["total_incident_count"] == "3"
    assert cells["seconds_to_first_ack_count"] == "2"
    assert cells["seconds_to_first_ack_p50"] == "60"
    assert cells["seconds_to_resolve_mean"] == "4000"
    assert cells["alerts_per_incident"] == "1.25"
    text = views.csv_text(rows)
    assert text.splitlines()[0].startswith("service_id,period_start,total_incident_count,")
    assert text.endswith("\r\n") and len(text.splitlines()) == 2


def test_the_trend_says_when_there_is_no_significant_change() -> None:
    trend = {
        "current": 120.0,
        "previous": 60.0,
        "difference": 60.0,
        "ci_low": -10.0,
        "ci_high": 130.0,
        "significant": False,
        "summary": "no significant change",
    }
    assert views.trend_text({"trend": trend}) == "No significant change (1 min → 2 min)."
    rise = {**trend, "significant": True, "summary": "increase", "ci_low": 5.0}
    assert views.trend_text({"trend": rise}) == "Increase: 1 min → 2 min."
    few = {**trend, "summary": "insufficient data"}
    for series in ({"trend": few}, {"trend": None}, None):
        assert views.trend_text(series) == "Not enough data for a trend."


def test_a_bad_insight_filter_is_answered_before_any_call(web: TestClient) -> None:
    sign_in(web)
    page = web.get("/console/insight?period=year")
    assert page.status_code == 400
    assert "period: &#39;year&#39; is not one of day, week, month" in page.text
    assert "<option selected>" not in page.text or "year" not in page.text
    csv = web.get("/console/insight.csv?since=soon")
    assert csv.status_code == 400 and "since:" in csv.text


def test_a_persons_interruptions_are_counted_and_charted_by_hour_class() -> None:
    row = {
        "user_id": "rita",
        "total_notifications": 9,
        "total_interruptions": 6,
        "total_business_hour_interruptions": 1,
        "total_off_hour_interruptions": 2,
        "total_sleep_hour_interruptions": 4,
    }
    p = views.Interruptions.of(row, {"rita": "Rita <R>"})
    assert (p.label, p.total) == ("Rita <R>", 6)
    assert p.counts == (("business", 1), ("off", 2), ("sleep", 4))
    assert "style" not in p.chart and "<R>" not in p.chart
    assert 'aria-label="Interruptions of Rita &lt;R&gt;: business 1, off 2, sleep 4"' in p.chart
    bar = r'<rect class="chart-bar chart-(\w+)" x="64" y="\d+" width="([\d.]+)"'
    widths = re.findall(bar, p.chart)
    track = views.CHART_W - 64
    assert widths == [
        ("business", str(track / 4)),
        ("off", str(track / 2)),
        ("sleep", str(float(track))),
    ]
    assert views.Interruptions.of({**row, "user_id": ""}, {}).label == "(nobody)"


def test_ratios_read_as_percentages() -> None:
    assert [views.percent(r) for r in (0.25, 0.0, 1.0, 0.12345)] == [
        "25 %",
        "0 %",
        "100 %",
        "12.3 %",
    ]
    assert views.percent(0.9995, 3) == "99.95 %"


def test_an_automation_decision_is_said_in_a_flash_and_approval_times_read_as_text() -> None:
    approved = views.decision_flash("restart", [{"state": "approved"}, {"state": "approved"}])
    assert (approved.kind, approved.text) == ("ok", "automation restart: approved; it runs now")
    rejected = views.decision_flash("restart", [{"state": "rejected"}])
    assert rejected.text == "automation restart: rejected; it will not run"
    assert views.decision_flash("restart", []).text == "automation restart: nothing decided"
    at = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
    [row] = views.approval_rows(
        [{"rule_id": "restart", "expires_at": at, "decided_at": None, "state": "pending"}]
    )
    assert row == {
        "rule_id": "restart",
        "expires_at": "2026-06-01T10:30:00+00:00",
        "decided_at": None,
        "state": "pending",
    }
    assert views.when(row["expires_at"])  # what the page's `when` filter shows
