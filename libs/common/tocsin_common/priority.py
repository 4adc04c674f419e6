"""An incident's priority as a command sets it (docs/incidents.md): an id in the form of
``insight.priorities``' ids (e.g. ``P1``), and one of them when any are configured."""

from __future__ import annotations

import re
from collections.abc import Sequence

PRIORITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def priority_problem(value: str, known: Sequence[str]) -> str | None:
    """Why ``value`` cannot be an incident's priority (naming the field), or None.
    ``known``: the ids of ``insight.priorities`` (empty: any well-formed id)."""
    if not value:
        return "priority: is required"
    if not PRIORITY_RE.match(value):
        return (
            f"priority: {value[:40]!r} is not a priority id (1 to 32 letters, digits, '-' "
            "and '_', starting with a letter or digit, e.g. 'P1')"
        )
    if known and value not in known:
        return f"priority: {value!r} is not one of insight.priorities ({', '.join(known)})"
    return None


def known_priorities(ids: Sequence[str]) -> list[str]:
    """The distinct ids, in configuration order (a priority may have several rules)."""
    return list(dict.fromkeys(ids))
