"""Silences: matchers over alert labels for a time range, optionally on one service (pure).

The gRPC API (silence_api.py) stores them in Redis; the worker keeps a snapshot refreshed
every second and asks :func:`silencing` which silence, if any, mutes an alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tocsin.v1 import silence_service_pb2 as pb
from tocsin_common.config.model import Limits, Matcher
from tocsin_common.limits import too_many
from tocsin_common.timeutil import set_timestamp

from tocsin_correlation.matchers import MatcherError, matches_all, parse_matcher, split_matchers

_OPS = {pb.Matcher.OP_EQUAL: "=", pb.Matcher.OP_NOT_EQUAL: "!=", pb.Matcher.OP_REGEX: "=~"}
_OPS[pb.Matcher.OP_NOT_REGEX] = "!~"
_PB_OPS = {v: k for k, v in _OPS.items()}


@dataclass(frozen=True)
class Silence:
    silence_id: str
    service_id: str  # "" = every service
    matchers: tuple[Matcher, ...]
    starts_at: float  # epoch seconds
    ends_at: float
    created_by: str = ""
    comment: str = ""
    public_title: str = ""  # a maintenance window's, for the public status page

    def active_at(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, service_id: str, labels: Mapping[str, str], now: float) -> bool:
        return (
            self.active_at(now)
            and (not self.service_id or self.service_id == service_id)
            and matches_all(self.matchers, labels)
        )

    def to_proto(self) -> pb.Silence:
        silence = pb.Silence(
            silence_id=self.silence_id,
            service_id=self.service_id,
            matchers=[
                pb.Matcher(name=m.name, value=m.value, op=_PB_OPS[m.op])  # type: ignore[arg-type]
                for m in self.matchers
            ],
            created_by=self.created_by,
            comment=self.comment,
            public_title=self.public_title,
        )
        set_timestamp(silence.starts_at, datetime.fromtimestamp(self.starts_at, UTC))
        set_timestamp(silence.ends_at, datetime.fromtimestamp(self.ends_at, UTC))
        return silence


def matchers_from_proto(
    matchers: Iterable[pb.Matcher], limits: Limits | None = None
) -> tuple[Matcher, ...]:
    """Matchers of a request. A matcher with no op is read as Alertmanager text in ``name``
    (``severity=~"warn|info"`` or ``{alertname="X", ...}``), for clients that pass text.
    With ``limits``, more than ``silence_max_matchers`` are refused before any is parsed,
    and a value over ``matcher_value_max_chars`` before its regex is compiled."""
    texts: list[tuple[int, list[str]]] = []
    for index, m in enumerate(matchers):
        try:
            if m.op == pb.Matcher.OP_UNSPECIFIED:
                items = split_matchers(m.name)
                if not items:
                    raise MatcherError("at least one matcher is needed")
            else:
                items = [f"{m.name}{_OPS[m.op]}{_quote(m.value)}"]
        except MatcherError as error:
            raise MatcherError(f"matchers[{index}]: {error}") from None
        texts.append((index, items))
    count = sum(len(items) for _, items in texts)
    cap = limits.silence_max_matchers if limits else None
    if cap is not None and (problem := too_many("matchers", count, cap, "silence_max_matchers")):
        raise MatcherError(problem)
    max_value = limits.matcher_value_max_chars if limits else None
    out: list[Matcher] = []
    for index, items in texts:
        try:
            out.extend(parse_matcher(item, max_value) for item in items)
        except MatcherError as error:
            raise MatcherError(f"matchers[{index}]: {error}") from None
    if not out:
        raise MatcherError("matchers: at least one matcher is needed")
    return tuple(out)


def count_active(
    silences: Iterable[Silence], service_id: str, now: float, excluding: str = ""
) -> int:
    """How many silences of ``service_id`` ("" = those of every service) are active or
    still to start at ``now``, leaving out the silence ``excluding`` (one being replaced)."""
    return sum(
        1
        for s in silences
        if s.service_id == service_id and s.ends_at > now and s.silence_id != excluding
    )


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def silence_from_proto(silence: pb.Silence) -> Silence:
    """A stored silence (already validated when it was created)."""
    return Silence(
        silence_id=silence.silence_id,
        service_id=silence.service_id,
        matchers=matchers_from_proto(silence.matchers),
        starts_at=silence.starts_at.ToNanoseconds() / 1e9,
        ends_at=silence.ends_at.ToNanoseconds() / 1e9,
        created_by=silence.created_by,
        comment=silence.comment,
        public_title=silence.public_title,
    )


def silencing(
    silences: Iterable[Silence], service_id: str, labels: Mapping[str, str], now: float
) -> Silence | None:
    """The first active silence that mutes an alert of ``service_id`` with ``labels``."""
    for silence in silences:
        if silence.mutes(service_id, labels, now):
            return silence
    return None
