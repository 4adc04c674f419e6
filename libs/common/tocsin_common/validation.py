"""Field-level input errors, collected rather than raised one at a time, so a sender sees
every problem of a bad request at once."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str  # path to the field, e.g. "payload.severity" or "alerts[2].labels"
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class InvalidInput(ValueError):
    """Input rejected for one or more field errors."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def clip(text: str, most: int = 200) -> str:
    """``text``, or when longer than ``most`` its two ends around a note of what was left
    out: error messages quote what they refuse, never a whole oversized request."""
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]}...[{len(text) - 2 * half:,} characters]...{text[-half:]}"


# -- the edge rule: an accepted event is one the pipeline can process ----------------------
#
# One set of checks for every way an event comes in (HTTP, gRPC, alerts.raw), so the three
# have the same limits. What they refuse is what a later stage would refuse or crash on:
# protobuf's recursion limit of 100 on Struct nesting, strings that are not UTF-8, numbers a
# Struct (a double) or a 64-bit field cannot hold, and records over Kafka's 1 MB.

# Nesting of a structured field (custom_details, stored as a protobuf Struct), the field
# itself being level 1. Measured with protobuf 7 (upb): 33 levels of objects still parse
# as an Alert but not as a change event inside an IncidentEvent's probable cause; 34 parse
# as nothing. 32 parses everywhere the value is carried.
MAX_STRUCT_DEPTH = 32
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# An alert's labels (SPEC §10): alert-ingest refuses more or longer ones; insight's incident
# facts keep at most as many.
MAX_LABELS = 256
MAX_LABEL_NAME = 256
MAX_LABEL_VALUE = 8 * 1024
# A normalized alert, counted with the labels the incident copies from it, at most this
# many bytes: its incidents.events record must stay under Kafka's 1,000,000-byte default.
MAX_ALERT_BYTES = 900_000
# A request: an HTTP body, an alerts.raw record's value, a gRPC SendEventRequest.
MAX_REQUEST_BYTES = 512 * 1024
MAX_VALUE_ERRORS = 20  # field errors reported per request by json_problems
_INT_DIGITS = 20  # an integer literal longer than this is outside 64 bits whatever it is


class _Literal:
    """A JSON number literal kept as its text: NaN, Infinity, or an integer too long to
    hold (Python refuses to convert integers over 4,300 digits)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _Literal:
    if len(text) > _INT_DIGITS:
        return _Literal(text)
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else _Literal(text)


def _parse_float(text: str) -> float | _Literal:
    value = float(text)
    return value if math.isfinite(value) else _Literal(text)


# A lone surrogate can only come from a \uD800-\uDFFF escape: UTF-8 cannot encode one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json(raw: bytes) -> Any:
    """The JSON document in ``raw``, checked by :func:`json_problems`; InvalidInput naming
    the body, or each field that breaks the edge rule. (Hot path: the document is walked
    only when a number was out of range or a surrogate escape is in the text.)"""
    odd: list[_Literal] = []

    def literal(text: str) -> _Literal:
        odd.append(_Literal(text))
        return odd[-1]

    def parse_int(text: str) -> int | _Literal:
        value = _parse_int(text)
        if isinstance(value, _Literal):
            odd.append(value)
        return value

    def parse_float(text: str) -> float | _Literal:
        value = _parse_float(text)
        if isinstance(value, _Literal):
            odd.append(value)
        return value

    try:
        body = json.loads(raw, parse_int=parse_int, parse_float=parse_float, parse_constant=literal)
    except UnicodeDecodeError as e:
        raise InvalidInput([FieldError("(body)", f"is not UTF-8 text: {e.reason}")]) from None
    except json.JSONDecodeError as e:
        raise InvalidInput([FieldError("(body)", f"is not valid JSON: {e}")]) from None
    except RecursionError:
        raise InvalidInput([FieldError("(body)", "is nested too deeply")]) from None
    if not odd and not _SURROGATE_ESCAPE.search(raw):
        return body
    problems = json_problems(body)
    if problems:
        raise InvalidInput(problems)
    return body


def safe_text(text: str) -> str:
    """``text`` with what is not UTF-8-encodable (lone surrogates) escaped: for a field
    path or a message that quotes a refused name."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(path: str, key: str) -> str:
    key = clip(safe_text(key), 60)
    return f"{path}.{key}" if path else key


def json_problems(value: Any, path: str = "") -> list[FieldError]:
    """What in a decoded JSON value no later stage could carry, by field path (at most
    MAX_VALUE_ERRORS): strings or names with lone surrogates, integers outside 64 bits,
    NaN, Infinity and numbers too large for a double. Iterative: any depth is walked."""
    errors: list[FieldError] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack and len(errors) < MAX_VALUE_ERRORS:
        where, item = stack.pop()
        shown = where or "(body)"
        if isinstance(item, str):
            if not _is_utf8(item):
                errors.append(FieldError(shown, "is not valid Unicode (a lone surrogate)"))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                errors.append(FieldError(shown, "is an integer outside the 64-bit range"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                errors.append(FieldError(shown, "is a number too large to hold (not finite)"))
        elif isinstance(item, _Literal):
            text = item.text.lstrip("-")
            if text.isdigit():
                errors.append(FieldError(shown, "is an integer outside the 64-bit range"))
            elif text[:1].isdigit():
                errors.append(FieldError(shown, "is a number too large to hold (not finite)"))
            else:
                errors.append(FieldError(shown, f"is {item.text}, which JSON does not allow"))
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not _is_utf8(key):
                    errors.append(
                        FieldError(
                            _join(where, key), "name is not valid Unicode (a lone surrogate)"
                        )
                    )
                    continue
                stack.append((_join(where, key), child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return errors[:MAX_VALUE_ERRORS]


def nesting_depth(value: Any) -> int:
    """Levels of objects and lists in ``value`` (a scalar: 0, ``{"a": 1}``: 1)."""
    deepest = 0
    stack: list[tuple[int, Any]] = [(0, value)]
    while stack:
        depth, item = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((depth + 1, child) for child in children)
    return deepest


def struct_depth_problem(value: Any, path: str) -> FieldError | None:
    """A structured field nested deeper than MAX_STRUCT_DEPTH, or None."""
    depth = nesting_depth(value)
    if depth <= MAX_STRUCT_DEPTH:
        return None
    return FieldError(
        path,
        f"is nested {depth} levels deep; at most {MAX_STRUCT_DEPTH} allowed "
        "(objects and lists each count as a level)",
    )
