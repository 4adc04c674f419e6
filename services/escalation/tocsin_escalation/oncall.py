"""Who is on call (kept for existing imports): the renderer lives in :mod:`schedule`."""

from __future__ import annotations

from tocsin_escalation.schedule import (
    OverrideSpan,
    layer_users,
    resolve_targets,
    turn_index,
    who_is_on_call,
)

__all__ = ["OverrideSpan", "layer_users", "resolve_targets", "turn_index", "who_is_on_call"]
