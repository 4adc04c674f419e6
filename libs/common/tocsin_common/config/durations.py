"""Durations in the configuration file: ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"1w"``.

A duration is one or more ``<whole number><unit>`` parts, units in descending order
(``w`` week, ``d`` day, ``h`` hour, ``m`` minute, ``s`` second), each unit at most once. A
bare whole number (YAML ``90``) means seconds. Negative values and fractions are refused:
every duration in the file is a count of whole seconds, and a typo must not silently become
"0" or "never".
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = [
    "Duration",
    "DurationError",
    "PositiveDuration",
    "format_duration",
    "parse_duration",
]

_UNITS: dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

# Units must come largest first and at most once ("1h30m", not "30m1h" or "1h1h"), so one
# spelling means one thing and mistakes such as "5mm" are reported instead of guessed at.
_DURATION_RE = re.compile(
    r"^(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$"
)

_EXPECTED = (
    "expected a duration such as '90s', '5m', '1h30m', '2d', '1w' or a whole number of seconds"
)


class DurationError(ValueError):
    """A value cannot be read as a duration; the message says what was expected."""


def parse_duration(value: object) -> timedelta:
    """Return ``value`` as a :class:`~datetime.timedelta`.

    Accepts a duration string (``"1h30m"``), a whole number of seconds (``int`` or a string
    of digits) or a ``timedelta``. Raises :class:`DurationError` for anything else,
    including negative values.
    """
    # bool is an int subclass; "ack_timeout: yes" is a mistake, not one second.
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}: {_EXPECTED}")
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError(f"negative duration {value} is not allowed")
        return value
    if isinstance(value, int):
        if value < 0:
            raise DurationError(f"negative duration {value} is not allowed")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise DurationError(f"negative duration {value!r} is not allowed")
        if text.isdigit():
            return timedelta(seconds=int(text))
        match = _DURATION_RE.match(text)
        if text and match is not None:
            seconds = sum(int(n) * _UNITS[unit] for unit, n in match.groupdict().items() if n)
            return timedelta(seconds=seconds)
        raise DurationError(f"invalid duration {value!r}: {_EXPECTED}")
    raise DurationError(f"invalid duration {value!r}: {_EXPECTED}")


def format_duration(value: timedelta) -> str:
    """Render a duration the way the file spells it (``timedelta(minutes=90)`` -> ``"1h30m"``).

    Whole seconds only (sub-second parts are dropped); ``timedelta(0)`` renders as ``"0s"``.
    """
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts: list[str] = []
    for unit, size in _UNITS.items():
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


def _positive(value: Any) -> timedelta:
    parsed = parse_duration(value)
    if parsed <= timedelta(0):
        raise DurationError(f"duration must be greater than 0, got {value!r}")
    return parsed


# Pydantic field types: the validator runs before pydantic's own timedelta check, so pydantic
# never applies its ISO-8601/float interpretation to values written in the file.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A duration of zero or more."""

PositiveDuration = Annotated[timedelta, BeforeValidator(_positive)]
"""A duration strictly greater than zero."""
