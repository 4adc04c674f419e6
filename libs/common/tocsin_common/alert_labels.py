"""The label set silences, inhibition and their previews match an alert against (pure):
correlation mutes with it, and the console previews a silence with it, so both always agree.
"""

from __future__ import annotations

from tocsin.v1 import alert_pb2

SEVERITY_NAMES = {
    alert_pb2.SEVERITY_CRITICAL: "critical",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_INFO: "info",
}


def alert_labels(alert: alert_pb2.Alert) -> dict[str, str]:
    """The label set matchers see: the alert's labels, plus its fields under their own names
    (service, severity, summary, source, component, group, class, dedup_key) where the
    alert has no label of that name — so Events v2 alerts, which have no labels, can be
    silenced and inhibited too."""
    fields = {
        "service": alert.service_id,
        "severity": SEVERITY_NAMES.get(alert.severity, ""),
        "summary": alert.summary,
        "source": alert.source,
        "component": alert.component,
        "group": alert.group,
        "class": getattr(alert, "class"),
        "dedup_key": alert.dedup_key,
    }
    return {**{k: v for k, v in fields.items() if v}, **dict(alert.labels)}
