"""The pure parts of alert-ingest's fast path: rate-limit leases, worker roles, whether
spans are exported, and the hot-path helpers (timestamps, event ids, key look-ups)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from tocsin_common.config import parse_config
from tocsin_common.settings import Settings, SettingsError
from tocsin_common.timeutil import to_timestamp
from tocsin_ingest import auth, fields, ratelimit, workers
from tocsin_ingest.ratelimit import LocalBudget, allows, estimate, grant, lease_size, wanted

# --- rate-limit leases -----------------------------------------------------------------------


def test_a_lease_is_a_fiftieth_of_the_limit_between_one_and_a_hundred() -> None:
    assert [lease_size(n) for n in (1, 3, 99, 100, 1200, 5000, 10**8)] == [1, 1, 1, 2, 24, 100, 100]


def test_a_request_asks_for_its_cost_plus_a_lease_less_one() -> None:
    assert wanted(limit=3, cost=1) == 1  # small limits: exactly the per-request check
    assert wanted(limit=1200, cost=1) == 24
    assert wanted(limit=1200, cost=100) == 123


def test_a_grant_is_the_lease_while_there_is_room_then_what_is_left_then_nothing() -> None:
    assert grant(previous=0, current=0, cost=1, want=24, limit=1200, elapsed=10) == 24
    assert grant(previous=0, current=1190, cost=1, want=24, limit=1200, elapsed=10) == 10
    assert grant(previous=0, current=1200, cost=1, want=24, limit=1200, elapsed=10) == 0
    # the previous window still weighs: 600 * (1 - 30/60) + 880 = 1180, room 20
    assert grant(previous=600, current=880, cost=5, want=24, limit=1200, elapsed=30) == 20


def test_a_request_bigger_than_the_limit_gets_exactly_its_cost_in_an_empty_window() -> None:
    assert grant(previous=0, current=0, cost=500, want=523, limit=100, elapsed=5) == 500
    assert grant(previous=0, current=1, cost=500, want=523, limit=100, elapsed=5) == 0


@given(
    previous=st.integers(0, 5000),
    current=st.integers(0, 5000),
    cost=st.integers(1, 300),
    limit=st.integers(1, 5000),
    elapsed=st.floats(0, 59.999),
)
def test_a_grant_pays_the_cost_exactly_when_allowed_and_never_passes_the_limit(
    previous: int, current: int, cost: int, limit: int, elapsed: float
) -> None:
    granted = grant(previous, current, cost, wanted(limit, cost), limit, elapsed)
    assert (granted >= cost) == allows(previous, current, cost, limit, elapsed, 60)
    if granted:
        rate = estimate(previous, current, elapsed, 60)
        assert rate + granted <= limit + 1e-6 or (rate <= 0 and granted == cost)
    else:
        assert granted == 0


@given(st.lists(st.integers(1, 5), min_size=1, max_size=200), st.integers(1, 400))
def test_replicas_leasing_together_never_admit_more_than_the_limit(
    costs: list[int], limit: int
) -> None:
    """Three replicas share one window counter (what Redis holds); each admits from its
    own leases. Whatever the interleaving, what they admit together stays within the
    limit, and a request is refused only when the counter has no room for it."""
    counter = 0
    budgets = [LocalBudget() for _ in range(3)]
    admitted = 0
    for n, cost in enumerate(costs):
        budget = budgets[n % 3]
        if budget.take("k", 7, cost):
            admitted += cost
            continue
        granted = grant(0, counter, cost, wanted(limit, cost), limit, 0.0)
        if granted:
            counter += granted
            budget.add("k", 7, granted - cost)
            admitted += cost
        else:
            assert counter + cost > limit and counter > 0
    assert admitted <= max(limit, costs[0])
    assert admitted <= counter


def test_a_local_budget_spends_within_its_window_and_drops_what_an_old_window_left() -> None:
    budget = LocalBudget()
    assert not budget.take("k", 1, 1)
    budget.add("k", 1, 5)
    assert budget.take("k", 1, 3) and budget.left("k", 1) == 2
    assert not budget.take("k", 1, 3)  # not enough: nothing is spent
    assert budget.left("k", 1) == 2
    assert not budget.take("k", 2, 1)  # the window turned: the old lease is gone
    budget.add("k", 2, 4)
    assert budget.left("k", 2) == 4
    assert budget.left("other", 2) == 0


# --- worker processes ------------------------------------------------------------------------


def test_the_started_process_is_worker_zero_and_runs_the_others() -> None:
    role = workers.role_from_argv([], 3)
    assert role.primary and role.index == 0 and list(role.others()) == [1, 2]
    assert role.metrics_port(9101) == 9101


def test_a_started_worker_knows_its_index_and_pipes() -> None:
    role = workers.role_from_argv(workers.worker_argv(2, 7, 9), 3)
    assert (role.index, role.parent_fd, role.ready_fd) == (2, 7, 9)
    assert not role.primary and list(role.others()) == []
    assert role.metrics_port(9101) == 9103


@pytest.mark.parametrize(
    "argv",
    [
        ["--worker", "3", "--parent-fd", "7", "--ready-fd", "9"],  # only 3 workers: 0..2
        ["--worker", "1"],  # a worker without the pipes to its worker 0
        ["--parent-fd", "7"],
        ["--worker", "x", "--parent-fd", "7", "--ready-fd", "9"],
        ["--port", "80"],
        ["--worker"],
    ],
)
def test_bad_worker_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SettingsError):
        workers.role_from_argv(argv, 3)


def test_the_worker_count_is_a_setting_of_one_by_default() -> None:
    assert Settings.from_env("alert-ingest", {}).ingest_workers == 1
    count = Settings.from_env("alert-ingest", {"TOCSIN_INGEST_WORKERS": "2"}).ingest_workers
    assert workers.worker_count(count) == 2
    with pytest.raises(SettingsError, match="TOCSIN_INGEST_WORKERS"):
        workers.worker_count(0)
    with pytest.raises(SettingsError):
        Settings.from_env("alert-ingest", {"TOCSIN_INGEST_WORKERS": "two"})


# --- hot-path helpers -----------------------------------------------------------------------


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_set_time_is_the_common_conversion(value: datetime) -> None:
    fast = Timestamp()
    fields.set_time(fast, value)
    assert fast == to_timestamp(value)


def test_event_ids_are_distinct_version_4_uuids() -> None:
    ids = {fields.event_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}


CONFIG_TEXT = """
version: 1
services:
  - id: checkout
    name: Checkout
    escalation_policy: p
    integrations: [{key: %s}]
escalation_policies:
  - {id: p, name: P, levels: [{delay: 5m, targets: [{type: user, id: u}]}]}
users: [{id: u, name: U, email: u@example.com}]
"""


def test_the_key_cache_follows_the_configuration_it_is_given() -> None:
    first = parse_config(CONFIG_TEXT % "key1key1key1key1key1key1key1key1", "a.yaml")
    second = parse_config(CONFIG_TEXT % "key2key2key2key2key2key2key2key2", "a.yaml")
    cache = auth.KeyCache()
    found = auth.authenticate(first, "events_v2", "key1key1key1key1key1key1key1key1", "k", cache)
    assert found[0].id == "checkout"
    with pytest.raises(Exception, match="is not a known integration key"):
        auth.authenticate(second, "events_v2", "key1key1key1key1key1key1key1key1", "k", cache)
    assert auth.authenticate(second, "events_v2", "key2key2key2key2key2key2key2key2", "k", cache)
    with pytest.raises(Exception, match="is not a known integration key"):
        auth.authenticate(second, "events_v2", "nope", "k", cache)


def test_the_rate_limit_window_and_lease_fit_the_documented_default() -> None:
    # rate_limit_per_minute defaults to 1200: a replica holds at most 24 unused events.
    assert ratelimit.lease_size(1200) == 24
