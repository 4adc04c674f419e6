"""What an incident List asks of the projection's indexes, and its page cursor (pure).

The projection keeps a sorted set of incident ids per status, service and urgency, plus one
of every incident, each scored by creation time (see projection.py). A List is answered by
intersecting one *group* per filter (a group is the union of the sets of that filter's
values) and walking the result newest first. The services a caller may read are a filter
like the others, applied in the index query: every page is cut from incidents that match
everything, so none comes back short.

A page token carries the last incident returned, as (score, id): the next page starts
strictly after it in (score desc, id desc) order, so incidents created meanwhile and
incidents that changed status never shift what a later page returns. It also carries a
digest of the filters it was issued for, and is refused with other filters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tocsin.v1 import incident_pb2, incident_service_pb2

KEY_PREFIX = "tocsin:incidents"
ALL_KEY = KEY_PREFIX  # every incident (the projection's original index, kept as it was)
EXPIRING_KEY = f"{KEY_PREFIX}:expiring"  # resolved incidents by when their keys expire

STATUSES: dict[int, str] = {
    incident_pb2.INCIDENT_STATUS_UNSPECIFIED: "unspecified",
    incident_pb2.INCIDENT_STATUS_TRIGGERED: "triggered",
    incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED: "acknowledged",
    incident_pb2.INCIDENT_STATUS_RESOLVED: "resolved",
}
URGENCIES: dict[int, str] = {
    incident_pb2.URGENCY_UNSPECIFIED: "unspecified",
    incident_pb2.URGENCY_HIGH: "high",
    incident_pb2.URGENCY_LOW: "low",
}


def status_key(status: int) -> str:
    return f"{KEY_PREFIX}:by-status:{STATUSES.get(status, str(status))}"


def urgency_key(urgency: int) -> str:
    return f"{KEY_PREFIX}:by-urgency:{URGENCIES.get(urgency, str(urgency))}"


def service_key(service_id: str) -> str:
    return f"{KEY_PREFIX}:by-service:{service_id}"


def expiring_member(incident_id: str, service_id: str) -> str:
    """The member of EXPIRING_KEY: the id and the service, so pruning finds its index."""
    return f"{incident_id}\t{service_id}"


class BadRequest(ValueError):
    """A filter or token the caller got wrong; the message names the field."""


@dataclass(frozen=True)
class Filters:
    service_ids: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    statuses: frozenset[int] = frozenset()
    urgencies: frozenset[int] = frozenset()
    since_ns: int | None = None  # created at or after
    until_ns: int | None = None  # created before

    def digest(self) -> str:
        """Identifies the filters, so a page token is not used with other ones."""
        canonical = json.dumps(
            [
                sorted(self.service_ids),
                sorted(self.teams),
                sorted(self.statuses),
                sorted(self.urgencies),
                self.since_ns,
                self.until_ns,
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def filters_of(request: incident_service_pb2.ListIncidentsRequest) -> Filters:
    """The filters of a ListIncidentsRequest, checked: bad values raise BadRequest."""
    statuses = frozenset(int(s) for s in request.statuses)
    for status in statuses:
        if status not in STATUSES or status == incident_pb2.INCIDENT_STATUS_UNSPECIFIED:
            raise BadRequest(f"statuses: {status} is not an incident status")
    urgencies = frozenset(int(u) for u in request.urgencies)
    for urgency in urgencies:
        if urgency not in URGENCIES or urgency == incident_pb2.URGENCY_UNSPECIFIED:
            raise BadRequest(f"urgencies: {urgency} is not an urgency")
    since = until = None
    if request.HasField("created_since"):
        since = request.created_since.ToNanoseconds()
    if request.HasField("created_until"):
        until = request.created_until.ToNanoseconds()
    if since is not None and until is not None and until <= since:
        raise BadRequest("created_until: must be after created_since")
    return Filters(
        service_ids=frozenset(request.service_ids),
        teams=frozenset(request.teams),
        statuses=statuses,
        urgencies=urgencies,
        since_ns=since,
        until_ns=until,
    )


@dataclass(frozen=True)
class Plan:
    """The index query: the intersection of ``groups`` (each the union of its keys; no
    groups: every incident), created within [min_score, max_score]. ``empty``: nothing can
    match, so no query is made."""

    groups: tuple[tuple[str, ...], ...]
    min_score: str
    max_score: str
    empty: bool = False


def score_of(ns: int) -> float:
    """An incident's score: its creation time in seconds (as the projection writes it)."""
    return ns / 1e9


def plan(
    filters: Filters,
    service_teams: dict[str, str],
    readable: Callable[[str], bool],
    reads_everything: bool,
) -> Plan:
    """Which index sets answer ``filters`` for a caller.

    ``service_teams``: every configured service's team; ``readable(service_id)``: whether
    the caller may read that service's incidents; ``reads_everything``: whether it may read
    any incident, even of a service the config no longer has (an admin).
    """
    min_score = "-inf" if filters.since_ns is None else repr(score_of(filters.since_ns))
    max_score = "+inf" if filters.until_ns is None else f"({score_of(filters.until_ns)!r}"
    services: set[str] | None = None  # None: no restriction
    if filters.service_ids:
        services = set(filters.service_ids)
    if filters.teams:
        of_teams = {s for s, team in service_teams.items() if team in filters.teams}
        services = of_teams if services is None else services & of_teams
    if not reads_everything:
        allowed = {s for s in service_teams if readable(s)}
        services = allowed if services is None else services & allowed
    groups: list[tuple[str, ...]] = []
    if services is not None:
        if not services:
            return Plan((), min_score, max_score, empty=True)
        groups.append(tuple(service_key(s) for s in sorted(services)))
    if filters.statuses:
        groups.append(tuple(status_key(s) for s in sorted(filters.statuses)))
    if filters.urgencies:
        groups.append(tuple(urgency_key(u) for u in sorted(filters.urgencies)))
    # The smallest groups first: the intersection's cost follows its first set.
    groups.sort(key=len)
    return Plan(tuple(groups), min_score, max_score)


@dataclass(frozen=True)
class Cursor:
    """The last incident of a page: its score (as Redis wrote it) and id."""

    score: str
    incident_id: str


_SCORE = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


def encode_cursor(cursor: Cursor, filters: Filters) -> str:
    raw = json.dumps([cursor.score, cursor.incident_id, filters.digest()]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, filters: Filters) -> Cursor:
    """The cursor of a page token; BadRequest (naming page_token) when it is not one of
    ours or was issued for other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        score, incident_id, digest = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("page_token: not a page token of this API") from None
    if not (
        isinstance(score, str)
        and _SCORE.match(score)
        and isinstance(incident_id, str)
        and incident_id
        and isinstance(digest, str)
    ):
        raise BadRequest("page_token: not a page token of this API")
    if digest != filters.digest():
        raise BadRequest("page_token: was issued for other filters; ask with the same ones")
    return Cursor(score, incident_id)


# --- Watch positions -----------------------------------------------------------------------

_POSITION = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})$")


def parse_position(text: str) -> tuple[int, int]:
    """A Watch position (a Redis stream id, ``<ms>-<seq>``); BadRequest naming
    from_position otherwise."""
    found = _POSITION.match(text)
    if found is None:
        raise BadRequest(f"from_position: {text[:64]!r} is not a Watch position")
    ms, seq = int(found.group(1)), int(found.group(2))
    if ms >= 2**64 or seq >= 2**64:
        raise BadRequest(f"from_position: {text[:64]!r} is not a Watch position")
    return ms, seq


def missed_events(
    position: str, first_kept: str | None, last_written: str | None, trimmed: bool
) -> bool:
    """Whether resuming after ``position`` could miss events. The stream is only ever cut
    from its oldest end (``trimmed``: it was), so events after ``position`` are gone when
    the oldest one kept (``first_kept``; None when it holds none) is newer than it. Errs
    only the safe way: a position that was exactly the last entry cut is refused too."""
    if not trimmed:
        return False
    oldest = first_kept if first_kept is not None else last_written
    return oldest is not None and parse_position(position) < parse_position(oldest)


def wanted(services: Iterable[str], service_id: str, readable: Callable[[str], bool]) -> bool:
    """Whether a Watch with these ``services`` (empty: all) sends an event of
    ``service_id`` to a caller who reads what ``readable`` says."""
    chosen = frozenset(services)
    return (not chosen or service_id in chosen) and readable(service_id)
