"""The tocsin CLI's pure parts: rendering, matchers and times, the credentials file's
permissions, profiles and env overrides, exit codes, problem+json lines, SSE parsing and
resuming, Kafka admin rows, and the api client against a fake transport."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tocsin_cli.client import ApiClient, problem_message
from tocsin_cli.commands.automation import rule_from_file
from tocsin_cli.commands.live import (
    event_line,
    report_columns,
    report_table_rows,
    seconds_text,
)
from tocsin_cli.commands.people import schedule_entries
from tocsin_cli.exitcodes import CliError, Exit, exit_for_status
from tocsin_cli.kafka_admin import group_service, lag_rows, replay_rows, topic_rows
from tocsin_cli.output import Column, OutputFormat, render, render_fields, text_of
from tocsin_cli.parsing import ArgError, parse_duration_arg, parse_matchers, parse_time_arg, rfc3339
from tocsin_cli.profiles import (
    Credential,
    Profile,
    Store,
    check_private,
    config_dir,
    normalise_api_url,
)
from tocsin_cli.sse import Event, SseParser, StreamDropped, parse, resume_forever
from tocsin_common.topics import ALL_TOPICS, CONSUMER_GROUPS, Topic

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

ROWS = [
    {"id": "inc-1", "status": "triggered", "service": {"id": "checkout"}, "labels": {"a": "b"}},
    {"incident_id": "inc-2", "status": "acknowledged", "service_id": "search", "labels": {}},
]
COLUMNS = [
    Column("id", "id", ("incident_id",)),
    Column("status", "status"),
    Column("service", "service_id", ("service.id",)),
    Column("labels", "labels"),
]


def test_table_has_a_header_and_a_line_per_row_with_fallback_keys() -> None:
    text = render(ROWS, OutputFormat.table, COLUMNS, width=100)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].split() == ["id", "status", "service", "labels"]
    assert "inc-1" in lines[2] and "checkout" in lines[2] and "a=b" in lines[2]
    # The second row names its fields the protos' way: the candidates find them.
    assert "inc-2" in lines[3] and "search" in lines[3] and lines[3].rstrip().endswith("-")


def test_empty_listing_says_so() -> None:
    assert render([], OutputFormat.table, COLUMNS, empty="no incidents match") == (
        "no incidents match\n"
    )


def test_json_output_is_the_api_objects_unchanged() -> None:
    assert json.loads(render(ROWS, OutputFormat.json, COLUMNS)) == ROWS


def test_yaml_output_parses_back() -> None:
    assert yaml.safe_load(render(ROWS, OutputFormat.yaml, COLUMNS)) == ROWS


def test_text_of_cells() -> None:
    assert text_of(None) == "-"
    assert text_of([]) == "-"
    assert text_of(["a", "b"]) == "a, b"
    assert text_of(True) == "yes"
    assert text_of({"k": 1}) == "k=1"


def test_fields_render_one_object_as_name_value_lines() -> None:
    text = render_fields({"id": "inc-1", "title": "disk full"})
    assert [line.split(maxsplit=1) for line in text.splitlines()] == [
        ["id", "inc-1"],
        ["title", "disk full"],
    ]


# ---------------------------------------------------------------------------------------------
# matchers, durations, times
# ---------------------------------------------------------------------------------------------


def test_amtool_matchers() -> None:
    assert parse_matchers(["alertname=Foo", "instance=~web.*", "env!=dev", 'job!~"test.*"']) == [
        'alertname="Foo"',
        'instance=~"web.*"',
        'env!="dev"',
        'job!~"test.*"',
    ]


def test_a_first_bare_word_is_the_alertname_as_in_amtool() -> None:
    assert parse_matchers(["DiskFull", "severity=critical"]) == [
        'alertname="DiskFull"',
        'severity="critical"',
    ]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ([], "no matchers"),
        (["a=b", "novalue"], "'novalue'"),
        (["instance=~(a"], "invalid regular expression"),
        (["9bad=x"], "'9bad=x'"),
        (['a="unclosed'], "closing double quote"),
    ],
)
def test_bad_matchers_name_the_argument(args: list[str], problem: str) -> None:
    with pytest.raises(ArgError, match="matcher") as info:
        parse_matchers(args)
    assert problem in str(info.value)


def test_durations() -> None:
    assert parse_duration_arg("2h") == timedelta(hours=2)
    assert parse_duration_arg("1h30m") == timedelta(minutes=90)
    assert parse_duration_arg("90") == timedelta(seconds=90)
    with pytest.raises(ArgError, match="--duration '2 hours'"):
        parse_duration_arg("2 hours")
    with pytest.raises(ArgError, match="more than zero"):
        parse_duration_arg("0s")


def test_times() -> None:
    assert parse_time_arg("now", NOW) == NOW
    assert parse_time_arg("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_time_arg("2026-12-01T09:00:00Z", NOW) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert parse_time_arg("2026-12-01T09:00:00", NOW) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert parse_time_arg("2026-12-01T10:00:00+01:00", NOW) == datetime(2026, 12, 1, 9, tzinfo=UTC)
    with pytest.raises(ArgError, match="--until 'yesterday'"):
        parse_time_arg("yesterday", NOW, "--until")
    assert rfc3339(datetime(2026, 12, 1, 10, 0, 0, 123, tzinfo=UTC)) == "2026-12-01T10:00:00Z"


# ---------------------------------------------------------------------------------------------
# profiles and the credentials file
# ---------------------------------------------------------------------------------------------


def test_config_dir_follows_xdg() -> None:
    assert config_dir({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/home/a"}) == Path("/x/cfg/tocsin")
    assert config_dir({"HOME": "/home/a"}) == Path("/home/a/.config/tocsin")
    # A relative XDG_CONFIG_HOME is invalid (the spec says to ignore it).
    assert config_dir({"XDG_CONFIG_HOME": "rel", "HOME": "/home/a"}) == Path(
        "/home/a/.config/tocsin"
    )


def test_api_url_is_normalised() -> None:
    assert normalise_api_url("http://h:8090/api/v1/") == "http://h:8090"
    with pytest.raises(CliError) as info:
        normalise_api_url("h:8090")
    assert info.value.code is Exit.USAGE


def test_credentials_are_written_0600_in_a_0700_directory(tmp_path: Path) -> None:
    store = Store({"XDG_CONFIG_HOME": str(tmp_path)})
    store.set_profile("prod", Profile(api_url="https://tocsin.example.com"))
    store.store_credential("prod", Credential(token="tocsin_abc"))
    assert (store.credentials_path.stat().st_mode & 0o777) == 0o600
    assert (store.dir.stat().st_mode & 0o777) == 0o700
    resolved = store.resolve()
    assert resolved.profile_name == "prod"
    assert resolved.api_url == "https://tocsin.example.com"
    assert resolved.credential == Credential(token="tocsin_abc")
    assert store.forget_credential("prod")
    assert store.resolve().credential is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_credentials_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    store = Store({"XDG_CONFIG_HOME": str(tmp_path)})
    store.store_credential("default", Credential(token="tocsin_abc"))
    store.credentials_path.chmod(mode)
    with pytest.raises(CliError) as info:
        store.resolve()
    assert info.value.code is Exit.AUTH
    assert f"permissions {mode:04o}" in str(info.value)
    assert f"chmod 600 {store.credentials_path}" in str(info.value)


def test_a_credentials_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yaml"
    path.write_text("{}")
    path.chmod(0o600)
    st = path.stat()
    check_private(st, path, st.st_uid)  # ours: fine
    with pytest.raises(CliError, match="owned by uid"):
        check_private(st, path, st.st_uid + 1)


def test_environment_overrides_the_files(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    Store(env).set_profile("default", Profile(api_url="http://from-file:1"))
    Store(env).store_credential("default", Credential(token="file-token"))
    resolved = Store(
        {**env, "TOCSIN_API_URL": "http://from-env:2", "TOCSIN_TOKEN": "env-token"}
    ).resolve()
    assert (resolved.api_url, resolved.credential) == ("http://from-env:2", Credential("env-token"))
    assert resolved.token_source == "TOCSIN_TOKEN"
    # The command line's --api-url beats the environment.
    flagged = Store({**env, "TOCSIN_API_URL": "http://from-env:2"}).resolve(api_url="http://f:3")
    assert flagged.api_url == "http://f:3"


def test_an_unknown_profile_field_is_named(tmp_path: Path) -> None:
    (tmp_path / "tocsin").mkdir()
    (tmp_path / "tocsin" / "config.yaml").write_text("profiles:\n  default:\n    api_ur: x\n")
    with pytest.raises(CliError, match=r"profiles\.default\.api_ur: unknown field"):
        Store({"XDG_CONFIG_HOME": str(tmp_path)}).resolve()


# ---------------------------------------------------------------------------------------------
# exit codes and problem+json
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Exit.ERROR),
        (401, Exit.AUTH),
        (403, Exit.AUTH),
        (404, Exit.NOT_FOUND),
        (409, Exit.CONFLICT),
        (412, Exit.CONFLICT),
        (422, Exit.ERROR),
        (429, Exit.RATE_LIMITED),
        (500, Exit.ERROR),
        (503, Exit.UNREACHABLE),
    ],
)
def test_exit_codes(status: int, code: Exit) -> None:
    assert exit_for_status(status) is code


def test_the_documented_exit_codes_are_these() -> None:
    assert {e.name: int(e) for e in Exit} == {
        "OK": 0,
        "ERROR": 1,
        "USAGE": 2,
        "AUTH": 3,
        "NOT_FOUND": 4,
        "CONFLICT": 5,
        "UNREACHABLE": 6,
        "RATE_LIMITED": 7,
    }
    doc = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    for code in Exit:
        assert f"| {int(code)} |" in doc, f"docs/cli.md does not document exit code {int(code)}"


def test_problem_json_is_one_line_naming_the_field() -> None:
    body = {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "the request is invalid",
        "errors": [
            {"field": "duration_seconds", "problem": "must be more than 0"},
            {"field": "matchers[0]", "problem": "invalid regular\nexpression"},
        ],
    }
    assert problem_message(422, body, "Unprocessable Content") == (
        "422 Unprocessable Content: duration_seconds: must be more than 0; "
        "matchers[0]: invalid regular expression (the request is invalid)"
    )
    assert problem_message(404, {"title": "Not Found", "detail": "no incident inc-9"}) == (
        "404: no incident inc-9"
    )
    assert problem_message(404, {"detail": "Not Found"}, "Not Found") == "404 Not Found"
    assert problem_message(502, "<html>bad gateway</html>", "Bad Gateway") == (
        "502 Bad Gateway: <html>bad gateway</html>"
    )


# ---------------------------------------------------------------------------------------------
# the api client, against a fake transport
# ---------------------------------------------------------------------------------------------


def _client(handler: Any, token: str | None = "tok") -> ApiClient:
    return ApiClient("http://api", token, transport=httpx.MockTransport(handler))


def test_pages_follows_next_cursor_and_sends_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        cursor = request.url.params.get("cursor")
        if cursor is None:
            return httpx.Response(
                200, json={"incidents": [{"id": "1"}, {"id": "2"}], "next_cursor": "c2"}
            )
        return httpx.Response(200, json={"incidents": [{"id": "3"}], "next_cursor": None})

    with _client(handler) as api:
        items = list(
            api.pages("/incidents", "incidents", {"status": ["triggered", "acknowledged"]})
        )
    assert [i["id"] for i in items] == ["1", "2", "3"]
    assert seen[0].url.path == "/api/v1/incidents"
    assert seen[0].url.params.get_list("status") == ["triggered", "acknowledged"]
    assert seen[1].url.params["cursor"] == "c2"
    assert seen[0].headers["authorization"] == "Bearer tok"


def test_pages_stops_at_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"incidents": [{"id": "1"}, {"id": "2"}], "next_cursor": "x"}
        )

    with _client(handler) as api:
        assert len(list(api.pages("/incidents", "incidents", limit=3))) == 3


def test_an_error_answer_becomes_its_exit_code_and_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"content-type": "application/problem+json", "retry-after": "7"},
            json={"title": "Too Many Requests", "detail": "slow down"},
        )

    with _client(handler) as api, pytest.raises(CliError) as info:
        api.get("/incidents")
    assert info.value.code is Exit.RATE_LIMITED
    assert str(info.value) == "429 Too Many Requests: slow down (retry after 7 s)"


def test_no_token_is_an_auth_error_before_any_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request without a token")

    with _client(handler, token=None) as api, pytest.raises(CliError) as info:
        api.get("/users/me")
    assert info.value.code is Exit.AUTH


def test_an_unreachable_api_is_exit_6() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with _client(handler) as api, pytest.raises(CliError) as info:
        api.get("/users/me")
    assert info.value.code is Exit.UNREACHABLE
    assert "cannot reach the api at http://api" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------------------------


def test_sse_parser_follows_the_standard() -> None:
    lines = [
        ": keep-alive",
        "id: 5",
        "event: incident",
        'data: {"a":',
        "data: 1}",
        "",
        "retry: 3000",
        "data:no space",
        "",
        "id: 7",
        "",  # an id with no data: no event, but the last id moves
        "data: x",
        "",
    ]
    assert list(parse(lines)) == [
        Event("5", "incident", '{"a":\n1}'),
        Event("5", "message", "no space"),
        Event("7", "message", "x"),
    ]
    parser = SseParser()
    for line in lines[:7]:
        parser.feed(line)
    assert parser.retry_ms == 3000


def test_resume_reconnects_from_the_last_event_id() -> None:
    opened: list[str | None] = []
    reconnects: list[str | None] = []
    sleeps: list[float] = []

    def open_stream(last: str | None) -> Any:
        opened.append(last)
        if len(opened) == 1:
            yield from ["id: 1", "data: a", "", "id: 2", "data: b", "", "id: 3", "data: par"]
            raise StreamDropped("connection reset")  # event 3 never completed
        if len(opened) == 2:
            raise StreamDropped("connection refused")  # the api is restarting
        yield from ["id: 3", "data: c", "", "id: 4", "data: d", ""]

    events = resume_forever(
        open_stream,
        on_reconnect=lambda last, _exc: reconnects.append(last),
        sleep=sleeps.append,
        backoff=(0.5, 10.0),
    )
    got = [next(events) for _ in range(4)]
    assert [e.data for e in got] == ["a", "b", "c", "d"]  # none lost, none twice
    assert opened == [None, "2", "2"]
    assert reconnects == ["2", "2"]
    assert sleeps == [0.5, 1.0]  # doubling while connections fail


def test_resume_gives_up_after_max_reconnects() -> None:
    def open_stream(last: str | None) -> Any:
        raise StreamDropped("refused")

    with pytest.raises(StreamDropped):
        list(resume_forever(open_stream, sleep=lambda _s: None, max_reconnects=2))


def test_event_line_names_the_incident() -> None:
    data = {
        "type": "acknowledged",
        "incident": {"id": "inc-1", "status": "acknowledged", "title": "disk"},
    }
    line = event_line(Event("9", "incident", json.dumps(data)))
    assert line.split("  ") == ["acknowledged", "inc-1", "acknowledged", "disk"]
    assert event_line(Event("9", "incident", "not json")) == "9  incident  not json"


# ---------------------------------------------------------------------------------------------
# report and schedule shapes
# ---------------------------------------------------------------------------------------------


def _dist(mean: float, p90: float) -> dict[str, float]:
    return {"count": 4, "mean": mean, "p50": mean, "p90": p90, "p95": p90, "max": p90 + 1}


def test_report_prints_each_groups_kpis_as_distributions() -> None:
    answer = {
        "data": [
            {
                "service_id": "checkout",
                "user_id": "ann",
                "period_start": "2026-11-30T00:00:00Z",
                "total_incident_count": 4,
                "seconds_to_first_ack": _dist(61, 90),
                "seconds_to_resolve": _dist(3725, 7300),
            },
            {"service_id": "search", "user_id": "", "total_incident_count": 1},
        ],
        "group_by": ["service", "user"],
    }
    rows = report_table_rows(answer, ["seconds_to_first_ack", "seconds_to_resolve"])
    columns = report_columns(["service", "user"], "week")
    assert [c.header for c in columns] == [
        "service_id",
        "user_id",
        "week",
        "incidents",
        "kpi",
        "count",
        "mean",
        "p50",
        "p90",
        "p95",
        "max",
    ]
    lines = render(rows, OutputFormat.table, columns).splitlines()
    assert lines[2].split() == [
        "checkout",
        "ann",
        "2026-11-30T00:00:00Z",
        "4",
        "first_ack",
        "4",
        "1m",
        "01s",
        "1m",
        "01s",
        "1m",
        "30s",
        "1m",
        "30s",
        "1m",
        "31s",
    ]
    assert lines[3].split()[3:7] == ["4", "resolve", "4", "1h"]
    # A group without a KPI value (nobody acknowledged): dashes, not zeros
    assert lines[4].split() == ["search", "-", "-", "1", "first_ack", "-", "-", "-", "-", "-", "-"]
    assert report_table_rows({"detail": "x"}, ["seconds_to_first_ack"]) == []


def test_seconds_read_as_durations() -> None:
    assert [seconds_text(v) for v in (None, 0, 42.4, 61, 3725, 90061)] == [
        "-",
        "0s",
        "42s",
        "1m 01s",
        "1h 02m",
        "1d 1h",
    ]


def test_schedule_entries_wherever_they_are() -> None:
    entry = {"user_id": "ann", "start": "a", "end": "b"}
    assert schedule_entries({"final_schedule": {"rendered_schedule_entries": [entry]}}) == [entry]
    assert schedule_entries({"entries": [entry]}) == [entry]
    assert schedule_entries({"id": "x"}) == []


# ---------------------------------------------------------------------------------------------
# Kafka admin rows
# ---------------------------------------------------------------------------------------------


def test_topic_rows() -> None:
    expected = [Topic("a", None, "k", "m"), Topic("b", 3, "k", "m"), Topic("c", 1, "k", "m")]
    rows = topic_rows(expected, {"a": 12, "b": 6}, configured=12)
    assert [(r.topic, r.expected_partitions, r.status, r.ok) for r in rows] == [
        ("a", 12, "ok", True),
        ("b", 3, "has 6 partitions, expected 3", False),
        ("c", 1, "missing", False),
    ]
    # The pipeline's topics follow the setting; fixed ones do not.
    rows = topic_rows(expected, {"a": 12, "b": 3}, configured=48)
    assert [(r.topic, r.status) for r in rows[:2]] == [
        ("a", "has 12 partitions, expected 48"),
        ("b", "ok"),
    ]


def test_lag_rows_count_uncommitted_partitions_from_their_start() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7}
    starts = {("t", 0): 0, ("t", 1): 0, ("t", 2): 2}
    committed = {("t", 0): 8, ("t", 1): 5}
    (row,) = lag_rows("g", "svc", ["t"], committed, starts, ends)
    assert (row.partitions, row.committed, row.end, row.lag, row.uncommitted_partitions) == (
        3,
        13,
        22,
        2 + 0 + 5,
        1,
    )


def test_replay_rows_show_before_and_after() -> None:
    rows = replay_rows({("t", 1): 9}, {("t", 1): 0, ("t", 0): 0})
    assert [(r.partition, r.before, r.after) for r in rows] == [(0, None, 0), (1, 9, 0)]


def test_consumer_groups_read_known_topics() -> None:
    names = {t.name for t in ALL_TOPICS}
    for group in CONSUMER_GROUPS:
        assert set(group.topics) <= names
        assert group_service(group.group_id) == group.service
    assert group_service("someone-else") == "-"


def test_nothing_here_reads_the_real_home(tmp_path: Path) -> None:
    # Guard for the tests above: every Store was given its own XDG_CONFIG_HOME.
    assert not str(config_dir({"XDG_CONFIG_HOME": str(tmp_path)})).startswith(
        os.path.expanduser("~/.config")
    )


def test_ids_are_never_folded_and_times_are_shown_to_the_second() -> None:
    rows = [
        {
            "id": "0b6c1f0e-8a8f-4f7e-9f0a-1d2c3b4a5e6f",
            "title": "x " * 40,
            "at": "2026-12-04T19:20:01.123456Z",
        }
    ]
    columns = [Column("id", "id", wrap=False), Column("title", "title"), Column("at", "at")]
    text = render(rows, OutputFormat.table, columns, width=80)
    assert "0b6c1f0e-8a8f-4f7e-9f0a-1d2c3b4a5e6f" in text
    assert text_of("2026-12-04T19:20:01.123456Z") == "2026-12-04T19:20:01Z"
    assert text_of("2026-12-04T19:20:01.5+01:00") == "2026-12-04T19:20:01+01:00"
    assert text_of("version 1.5Z") == "version 1.5Z"


def test_an_error_event_ends_the_tail_with_its_problem() -> None:
    from tocsin_cli.commands.live import stream_error

    problem = {"title": "Unauthorized", "status": 401, "detail": "the token was revoked"}
    error = stream_error(Event("5", "error", json.dumps(problem)))
    assert error.code is Exit.AUTH
    assert str(error) == "401: the token was revoked"
    assert stream_error(Event(None, "error", "gone")).code is Exit.ERROR


def test_profiles_are_chosen_by_flag_then_environment_then_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    store = Store(env)
    store.set_profile("dev", Profile(api_url="http://dev:1"))
    store.set_profile("prod", Profile(api_url="https://prod"), make_current=True)
    store.store_credential("dev", Credential(token="dev-token"))
    assert store.resolve().profile_name == "prod"
    assert store.resolve().credential is None  # prod has no token
    by_env = Store({**env, "TOCSIN_PROFILE": "dev"}).resolve()
    assert (by_env.profile_name, by_env.api_url, by_env.credential) == (
        "dev",
        "http://dev:1",
        Credential(token="dev-token"),
    )
    assert Store({**env, "TOCSIN_PROFILE": "dev"}).resolve(profile="prod").profile_name == "prod"


def test_a_dry_run_rule_file_is_one_rule(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "config" / "automation-rule.example.yaml"
    rule = rule_from_file(example)
    assert rule["id"] == "checkout-runbook-note" and rule["on"] == ["triggered", "level 2"]
    listed = tmp_path / "two.yaml"
    listed.write_text("- {id: a}\n- {id: b}\n")
    with pytest.raises(ArgError, match="expected one rule"):
        rule_from_file(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    with pytest.raises(ArgError, match="not YAML"):
        rule_from_file(broken)
    with pytest.raises(ArgError, match=r"missing\.yaml"):
        rule_from_file(tmp_path / "missing.yaml")
