"""The pure parts of the incident read side: filters, index planning, cursors, positions."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import incident_pb2, incident_service_pb2
from tocsin_escalation.incident_query import (
    BadRequest,
    Cursor,
    Filters,
    decode_cursor,
    encode_cursor,
    filters_of,
    missed_events,
    parse_position,
    plan,
    service_key,
    status_key,
    urgency_key,
    wanted,
)

TEAMS = {"api": "web", "db": "data", "cache": "web", "lonely": ""}


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def test_filters_of_a_request_and_what_is_refused() -> None:
    request = incident_service_pb2.ListIncidentsRequest(
        service_ids=["api"],
        teams=["web"],
        statuses=[incident_pb2.INCIDENT_STATUS_RESOLVED],
        urgencies=[incident_pb2.URGENCY_HIGH],
        created_since=ts(100),
        created_until=ts(200),
    )
    filters = filters_of(request)
    assert filters == Filters(
        frozenset({"api"}),
        frozenset({"web"}),
        frozenset({incident_pb2.INCIDENT_STATUS_RESOLVED}),
        frozenset({incident_pb2.URGENCY_HIGH}),
        100_000_000_000,
        200_000_000_000,
    )
    bad = [
        (incident_service_pb2.ListIncidentsRequest(statuses=[0]), "statuses: 0"),
        (incident_service_pb2.ListIncidentsRequest(statuses=[9]), "statuses: 9"),
        (incident_service_pb2.ListIncidentsRequest(urgencies=[0]), "urgencies: 0"),
        (
            incident_service_pb2.ListIncidentsRequest(created_since=ts(5), created_until=ts(5)),
            "created_until: must be after created_since",
        ),
    ]
    for request, message in bad:
        with pytest.raises(BadRequest, match=message):
            filters_of(request)


def test_no_filter_and_a_reader_of_everything_walks_every_incident() -> None:
    assert plan(Filters(), TEAMS, lambda s: True, reads_everything=True).groups == ()


def test_a_caller_who_reads_some_teams_is_restricted_to_their_services_in_the_query() -> None:
    query = plan(Filters(), TEAMS, lambda s: TEAMS[s] == "web", reads_everything=False)
    assert query.groups == ((service_key("api"), service_key("cache")),)


def test_filters_intersect_and_a_team_means_its_services() -> None:
    filters = Filters(
        teams=frozenset({"web"}),
        statuses=frozenset({1, 2}),
        urgencies=frozenset({incident_pb2.URGENCY_LOW}),
        since_ns=1_500_000_000,
        until_ns=2_000_000_000,
    )
    query = plan(filters, TEAMS, lambda s: True, reads_everything=True)
    assert set(query.groups) == {
        (service_key("api"), service_key("cache")),
        (status_key(1), status_key(2)),
        (urgency_key(incident_pb2.URGENCY_LOW),),
    }
    assert [len(g) for g in query.groups] == sorted(len(g) for g in query.groups)
    assert (query.min_score, query.max_score) == ("1.5", "(2.0")  # until is exclusive
    assert status_key(3).endswith(":by-status:resolved")


def test_nothing_readable_or_disjoint_filters_plan_no_query() -> None:
    nobody = plan(Filters(), TEAMS, lambda s: False, reads_everything=False)
    assert nobody.empty
    disjoint = Filters(service_ids=frozenset({"db"}), teams=frozenset({"web"}))
    assert plan(disjoint, TEAMS, lambda s: True, reads_everything=True).empty
    # asked for a service the caller may not read: nothing, not an error
    assert plan(Filters(service_ids=frozenset({"db"})), TEAMS, lambda s: s == "api", False).empty
    # an admin may list a service the config no longer has
    gone = plan(Filters(service_ids=frozenset({"gone"})), TEAMS, lambda s: True, True)
    assert gone.groups == ((service_key("gone"),),)


def test_a_cursor_round_trips_and_is_bound_to_its_filters() -> None:
    filters = Filters(service_ids=frozenset({"api"}))
    cursor = Cursor("1732622400.1234567", "inc-7")
    token = encode_cursor(cursor, filters)
    assert decode_cursor(token, Filters(service_ids=frozenset({"api"}))) == cursor
    with pytest.raises(BadRequest, match="page_token: was issued for other filters"):
        decode_cursor(token, Filters(service_ids=frozenset({"db"})))
    for garbage in ("x", "!!!", encode_cursor(Cursor("1e3", "a"), filters)[:-3], "W10"):
        with pytest.raises(BadRequest, match="page_token: "):
            decode_cursor(garbage, filters)


def test_positions_parse_and_a_trimmed_stream_is_detected() -> None:
    assert parse_position("1732622400000-3") == (1732622400000, 3)
    for bad in ("", "abc", "1-", "-1", "1-2-3", "99999999999999999999-0"):
        with pytest.raises(BadRequest, match="from_position: "):
            parse_position(bad)
    assert not missed_events("0-0", "5-0", "9-0", trimmed=False)  # all still there
    assert not missed_events("5-0", "5-0", "9-0", trimmed=True)
    assert not missed_events("7-0", "5-0", "9-0", trimmed=True)
    assert missed_events("4-9", "5-0", "9-0", trimmed=True)
    assert missed_events("0-0", None, "9-0", trimmed=True)  # everything was cut
    assert not missed_events("9-0", None, "9-0", trimmed=True)


def test_watch_sends_chosen_and_readable_services_only() -> None:
    assert wanted([], "api", lambda s: True)
    assert not wanted(["db"], "api", lambda s: True)
    assert not wanted([], "api", lambda s: False)
