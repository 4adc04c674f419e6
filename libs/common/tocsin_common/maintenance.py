"""Runtime maintenance windows (``POST /api/v1/maintenance_windows``): a silence of one
service whose single matcher is ``service="<id>"`` (every alert of that service) and whose
comment starts with ``[maintenance]``. Correlation records the service's alerts as
suppressed, as during a window planned in the config; the public status page shows the
window by its optional public title (docs/status-page.md). Pure."""

from __future__ import annotations

from tocsin.v1 import silence_service_pb2 as pb

__all__ = ["DEFAULT_PUBLIC_TITLE", "MAINTENANCE", "is_maintenance"]

MAINTENANCE = "[maintenance]"
# What the public page calls a window that has no public title of its own.
DEFAULT_PUBLIC_TITLE = "Scheduled maintenance"


def is_maintenance(silence: pb.Silence) -> bool:
    """Whether the silence is a runtime maintenance window."""
    return (
        bool(silence.service_id)
        and silence.comment.startswith(MAINTENANCE)
        and len(silence.matchers) == 1
        and silence.matchers[0].name == "service"
        and silence.matchers[0].op == pb.Matcher.OP_EQUAL
        and silence.matchers[0].value == silence.service_id
    )
