"""Command-line values: amtool's matchers, durations and times. Pure; the current time is
passed in, never read here. Each parser raises :class:`ArgError` naming the value and what
was expected (the command turns it into a usage error, exit 2)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

_OPERATORS = ("=~", "!~", "!=", "=")


class ArgError(ValueError):
    """A command-line value cannot be used; ``str()`` names it and says why."""


def parse_matchers(args: Sequence[str]) -> list[str]:
    """amtool's matcher arguments as the api's matcher strings (``name op "value"``).

    ``alertname=Foo``, ``instance=~"web.*"`` (the shell has usually removed the quotes:
    ``instance=~web.*``), ``env!=dev``, ``job!~"test.*"``; as in amtool, a first argument
    with no operator is the alertname (``tocsin silence add DiskFull ...``). Regexes are
    checked with RE2 here, as the services will check them.
    """
    # The services' own matcher model (imported here: pydantic and RE2 cost every command's
    # start otherwise).
    from pydantic import ValidationError
    from tocsin_common.config.model import Matcher

    if not args:
        raise ArgError('no matchers: give at least one, e.g. alertname=DiskFull or job=~"web.*"')
    out: list[str] = []
    for index, raw in enumerate(args):
        text = raw
        if index == 0 and not any(op in raw for op in _OPERATORS):
            text = f"alertname={raw}"
        try:
            matcher = Matcher.model_validate(text)
        except ValidationError as exc:
            problem = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ArgError(f"matcher {raw!r}: {problem}") from None
        out.append(str(matcher))
    return out


def parse_duration_arg(value: str, name: str = "--duration") -> timedelta:
    """A duration such as ``2h``, ``90m``, ``1h30m`` or ``3600`` (seconds), more than zero."""
    from tocsin_common.config.durations import DurationError, parse_duration

    try:
        duration = parse_duration(value.strip())
    except DurationError as exc:
        raise ArgError(f"{name} {value!r}: {exc}") from None
    if duration <= timedelta(0):
        raise ArgError(f"{name} {value!r}: must be more than zero")
    return duration


def parse_time_arg(value: str, now: datetime, name: str = "--since") -> datetime:
    """A point in time: RFC 3339 (``2026-12-04T09:00:00Z``; without an offset it is UTC),
    ``now``, or a duration meaning that long ago (``24h``, ``7d``)."""
    from tocsin_common.config.durations import DurationError, parse_duration

    text = value.strip()
    if text == "now":
        return now
    if text and text[0].isdigit() and not any(c in text for c in "-:T"):
        try:
            return now - parse_duration(text)
        except DurationError:
            pass
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ArgError(
            f"{name} {value!r}: expected an RFC 3339 time (2026-12-04T09:00:00Z), 'now', "
            "or a duration ago such as 24h or 7d"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    """A time as the api takes it: UTC, seconds, ``Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
