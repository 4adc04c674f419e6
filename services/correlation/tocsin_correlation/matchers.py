"""Alertmanager label matchers over alerts (pure).

Matchers are the config model's :class:`~tocsin_common.config.model.Matcher` (``=``, ``!=``,
``=~``, ``!~``; regexes RE2, anchored; a missing label matches as ""). This module parses the
text forms people type — ``{alertname="X", severity=~"warn|info"}`` or a list of single
matchers — and gives every alert a label set to match against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError
from tocsin_common.alert_labels import SEVERITY_NAMES, alert_labels
from tocsin_common.config.model import Matcher
from tocsin_common.validation import clip

__all__ = [
    "SEVERITY_NAMES",
    "MatcherError",
    "alert_labels",
    "matches_all",
    "parse_matcher",
    "parse_matchers",
    "split_matchers",
]

class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message names it and says what was expected."""


def parse_matcher(text: str, max_value_chars: int | None = None) -> Matcher:
    """One matcher; with ``max_value_chars``, a longer value is refused before a regex is
    compiled (compiled regexes are cached)."""
    context = {"max_value_chars": max_value_chars} if max_value_chars is not None else None
    try:
        return Matcher.model_validate(text, context=context)
    except ValidationError as error:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise MatcherError(f"invalid matcher {clip(text)!r}: {problems}") from None


def _split(body: str) -> list[str]:
    """Split ``a="x", b=~"y,z"`` at the commas outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise MatcherError(f"unterminated quote in {body!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def split_matchers(spec: str | Iterable[str]) -> list[str]:
    """The text of each matcher in ``{a="x", b=~"y|z"}`` (braces optional) or in a list of
    matchers, not yet parsed (so a caller can count them first)."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            if not text.endswith("}"):
                raise MatcherError(f"missing closing brace in {spec!r}")
            text = text[1:-1]
        return _split(text)
    return [item for s in spec for item in (_split(s) if "," in s else [s])]


def parse_matchers(spec: str | Iterable[str]) -> tuple[Matcher, ...]:
    """Matchers from ``{a="x", b=~"y|z"}`` (braces optional) or from a list of matchers."""
    items = split_matchers(spec)
    if not items:
        raise MatcherError("at least one matcher is needed")
    return tuple(parse_matcher(item) for item in items)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
