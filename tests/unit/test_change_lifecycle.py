"""Change events: kind, status, version and rollback link, validated at ingest's edge and
folded into each change's state."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tocsin.v1 import alert_pb2
from tocsin_common.change.lifecycle import ChangeRecord, apply, fold, in_flight
from tocsin_common.validation import InvalidInput
from tocsin_ingest.events_v2 import normalize_change

RECEIVED = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def body(**payload: Any) -> dict[str, Any]:
    return {
        "routing_key": "checkout000000000000000000000001",
        "payload": {"summary": "Deploy 1.2.3", "source": "ci", **payload},
    }


def errors_of(payload: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        normalize_change(body(**payload), "checkout", RECEIVED)
    return {e.field: e.problem for e in caught.value.errors}


def test_a_plain_pagerduty_change_event_is_still_accepted() -> None:
    change = normalize_change(body(), "checkout", RECEIVED)
    assert change.kind == alert_pb2.CHANGE_KIND_UNSPECIFIED
    assert change.status == alert_pb2.CHANGE_STATUS_UNSPECIFIED
    assert change.change_id == change.version == change.rollback_of == ""


def test_lifecycle_fields_are_carried() -> None:
    change = normalize_change(
        body(
            change_id="rb-7",
            kind="rollback",
            status="started",
            version="1.2.2",
            rollback_of="dep-6",
            environment="production",
        ),
        "checkout",
        RECEIVED,
    )
    assert (change.change_id, change.kind, change.status) == (
        "rb-7",
        alert_pb2.CHANGE_KIND_ROLLBACK,
        alert_pb2.CHANGE_STATUS_STARTED,
    )
    assert (change.version, change.rollback_of, change.environment) == (
        "1.2.2",
        "dep-6",
        "production",
    )


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        (
            {"kind": "release"},
            "payload.kind",
            "must be one of deploy, rollback, config, feature_flag",
        ),
        (
            {"status": "done", "change_id": "c"},
            "payload.status",
            "must be one of started, succeeded",
        ),
        ({"status": "started"}, "payload.change_id", "is required with a status"),
        (
            {"kind": "rollback", "change_id": "c"},
            "payload.rollback_of",
            "is required for a rollback",
        ),
        (
            {"kind": "deploy", "rollback_of": "x"},
            "payload.rollback_of",
            "only a change of kind rollback",
        ),
        (
            {"kind": "rollback", "change_id": "c", "rollback_of": "c"},
            "payload.rollback_of",
            "names the change itself",
        ),
        ({"change_id": "c" * 256}, "payload.change_id", "256"),
        ({"version": "v" * 256}, "payload.version", "256"),
        ({"environment": "e" * 65}, "payload.environment", "65"),
        ({"version": 3}, "payload.version", "string"),
    ],
)
def test_bad_lifecycle_fields_are_refused_naming_the_field(
    payload: dict[str, Any], field: str, fragment: str
) -> None:
    errors = errors_of(payload)
    assert field in errors, errors
    assert fragment in errors[field]


def record(event_id: str, minutes: int, **fields: Any) -> ChangeRecord:
    values: dict[str, Any] = {"service_id": "checkout", "change_id": "dep-1", **fields}
    return ChangeRecord(event_id=event_id, at=T0 + timedelta(minutes=minutes), **values)


STARTED = record("e1", 0, kind="deploy", status="started", version="1.2.3", environment="prod")
SUCCEEDED = record("e2", 10, status="succeeded")
FAILED = record("e3", 12, status="failed")
ROLLED = record("e4", 30, status="rolled_back")

FOLDS = [
    ("started only", [STARTED], "started", True),
    ("started then succeeded", [STARTED, SUCCEEDED], "succeeded", False),
    ("succeeded then a late failure report", [STARTED, SUCCEEDED, FAILED], "failed", False),
    ("a late 'started' does not reopen it", [SUCCEEDED, STARTED], "succeeded", False),
    ("rolled back is final", [STARTED, ROLLED, SUCCEEDED], "rolled_back", False),
]


@pytest.mark.parametrize(
    ("events", "status", "flying"), [f[1:] for f in FOLDS], ids=[f[0] for f in FOLDS]
)
def test_fold_in_any_order(events: list[ChangeRecord], status: str, flying: bool) -> None:
    for order in itertools.permutations(events):
        state = fold(order)["dep-1"]
        assert (state.status, state.in_flight) == (status, flying), order
        assert state.events == len(events)
    state = fold(events)["dep-1"]
    if STARTED in events:
        assert (state.kind, state.version, state.environment) == ("deploy", "1.2.3", "prod")
        assert state.started_at == T0


def test_finished_at_and_apply_refuses_another_change() -> None:
    state = apply(apply(None, STARTED), SUCCEEDED)
    assert state.finished_at == T0 + timedelta(minutes=10)
    with pytest.raises(ValueError, match="change_id"):
        apply(state, record("x", 1, change_id="dep-2"))


def test_a_rollback_marks_its_change_rolled_back() -> None:
    rollback = [
        record("r1", 40, change_id="rb-1", kind="rollback", rollback_of="dep-1", status="started"),
        record("r2", 45, change_id="rb-1", status="succeeded"),
    ]
    states = fold([STARTED, SUCCEEDED, *rollback])
    assert states["dep-1"].status == "rolled_back"
    assert states["dep-1"].rolled_back_by == "rb-1"
    assert states["rb-1"].status == "succeeded" and states["rb-1"].rollback_of == "dep-1"
    # A rollback still running, or failed, leaves the change as it was.
    assert fold([STARTED, SUCCEEDED, rollback[0]])["dep-1"].status == "succeeded"
    failed = record("r3", 46, change_id="rb-1", status="failed")
    assert fold([STARTED, SUCCEEDED, rollback[0], failed])["dep-1"].status == "succeeded"
    # A rollback on another service does not touch this one.
    elsewhere = record(
        "r4", 40, change_id="rb-2", kind="rollback", rollback_of="dep-1", service_id="search"
    )
    assert fold([STARTED, SUCCEEDED, elsewhere])["dep-1"].status == "succeeded"


def test_an_event_without_change_id_is_its_own_change() -> None:
    plain = ChangeRecord(event_id="ev-9", service_id="checkout", at=T0)
    states = fold([plain])
    assert states["ev-9"].status == "unspecified" and not states["ev-9"].in_flight


def test_from_proto_and_in_flight_feed_the_gate() -> None:
    change = normalize_change(
        body(
            change_id="dep-5",
            kind="deploy",
            status="started",
            environment="production",
            timestamp="2026-05-04T11:50:00Z",
        ),
        "checkout",
        RECEIVED,
    )
    states = fold([ChangeRecord.from_proto(change)])
    flying = in_flight(states, RECEIVED, timedelta(hours=24))
    assert [(c.change_id, c.service, c.environment) for c in flying] == [
        ("dep-5", "checkout", "production")
    ]
    assert flying[0].started_at == datetime(2026, 5, 4, 11, 50, tzinfo=UTC)
    assert in_flight(states, RECEIVED + timedelta(days=2), timedelta(hours=24)) == ()
