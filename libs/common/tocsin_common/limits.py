"""Caps on user-supplied collections and strings (SPEC §10), as pure checks.

The caps are the ``limits:`` section of the configuration (:class:`~tocsin_common.config.Limits`,
docs/configuration.md). Each check returns the problem it found, or nothing, as a message
that names the field, its size, the cap and the setting, e.g.::

    comment: 1,500 characters, over the limit of 1,000 (limits.silence_comment_max_chars)

so that a gRPC handler refuses a request in one line: ``INVALID_ARGUMENT`` for a field that
is too big, ``RESOURCE_EXHAUSTED`` when a stored collection is full.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from tocsin_common.config.durations import format_duration
from tocsin_common.config.model import Limits, Matcher

__all__ = [
    "active_silences_problem",
    "note_problem",
    "purgeable_silences",
    "silence_problems",
    "snooze_problem",
    "too_long",
    "too_many",
]


def too_long(field: str, value: str, cap: int, setting: str) -> str | None:
    """``field`` is over ``cap`` characters, or None."""
    if len(value) <= cap:
        return None
    return f"{field}: {len(value):,} characters, over the limit of {cap:,} (limits.{setting})"


def too_many(field: str, count: int, cap: int, setting: str) -> str | None:
    """``field`` holds more than ``cap`` items, or None."""
    if count <= cap:
        return None
    return f"{field}: {count:,} items, over the limit of {cap:,} (limits.{setting})"


def silence_problems(
    limits: Limits,
    matchers: Sequence[Matcher],
    *,
    comment: str,
    silence_id: str = "",
    created_by: str = "",
) -> list[str]:
    """What is over a cap in a silence to be created (empty when it fits)."""
    checks = [
        too_many("matchers", len(matchers), limits.silence_max_matchers, "silence_max_matchers"),
        too_long("comment", comment, limits.silence_comment_max_chars, "silence_comment_max_chars"),
        too_long("silence_id", silence_id, limits.identifier_max_chars, "identifier_max_chars"),
        too_long("created_by", created_by, limits.identifier_max_chars, "identifier_max_chars"),
    ]
    for index, matcher in enumerate(matchers):
        checks.append(
            too_long(
                f"matchers[{index}].name",
                matcher.name,
                limits.label_name_max_chars,
                "label_name_max_chars",
            )
        )
        checks.append(
            too_long(
                f"matchers[{index}].value",
                matcher.value,
                limits.matcher_value_max_chars,
                "matcher_value_max_chars",
            )
        )
    return [problem for problem in checks if problem]


def active_silences_problem(limits: Limits, service_id: str, active: int) -> str | None:
    """Refusal of one more silence where ``active`` silences of ``service_id`` ("" for the
    silences of every service) are already active, or None when there is room."""
    cap = limits.active_silences_per_service
    if active < cap:
        return None
    whose = f"service {service_id!r}" if service_id else "every service (no service_id)"
    return (
        f"service_id: {active:,} silences of {whose} are active, the limit is {cap:,} "
        "(limits.active_silences_per_service); expire some first"
    )


def purgeable_silences(
    limits: Limits, ends_at: Iterable[tuple[str, float]], now: float
) -> list[str]:
    """The ids, among (silence id, end in epoch seconds), of silences that ended more than
    ``limits.silence_retention`` ago: kept that long to be listed, then deleted."""
    horizon = now - limits.silence_retention.total_seconds()
    return [silence_id for silence_id, end in ends_at if end <= horizon]


def snooze_problem(limits: Limits, until: datetime, now: datetime) -> str | None:
    """A snooze further ahead than ``limits.snooze_max``, or None."""
    if until - now <= limits.snooze_max:
        return None
    return (
        f"until: {until.isoformat()} is more than {format_duration(limits.snooze_max)} "
        "ahead (limits.snooze_max)"
    )


def note_problem(limits: Limits, text: str) -> str | None:
    """A note over ``limits.note_max_chars``, or None."""
    return too_long("text", text, limits.note_max_chars, "note_max_chars")
