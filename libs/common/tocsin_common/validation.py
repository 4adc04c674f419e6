"""Field-level input errors, collected rather than raised one at a time, so a sender sees
every problem of a bad request at once."""

from __future__ import annotations

from dataclasses import dataclass


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
