"""Stage 4 — render: the message for one contact method, from the jobs' incidents, the
channel's templates, and signed acknowledge/resolve links (approve/reject links in a
message asking for an automation action's approval)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from tocsin.v1 import alert_pb2, incident_pb2, oncall_service_pb2
from tocsin_common.clock import Clock
from tocsin_common.timeutil import from_timestamp

from tocsin_notification.links import STATE_NAMES, LinkSigner
from tocsin_notification.pipeline.job import Job
from tocsin_notification.providers.base import IncidentLine, Page
from tocsin_notification.render import Renderer, runbook_of

SEVERITY_NAMES = {
    alert_pb2.SEVERITY_INFO: "info",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_CRITICAL: "critical",
}


class RenderStage:
    def __init__(
        self,
        renderer: Renderer,
        signer: LinkSigner,
        public_url: str,
        clock: Clock,
        console_url: str = "",
    ) -> None:
        """``console_url``: the api's base as people reach it (reminders link to the
        incident's page in its console)."""
        self._renderer = renderer
        self._signer = signer
        self._public_url = public_url
        self._clock = clock
        self._console_url = console_url.rstrip("/")

    def line(self, job: Job) -> IncidentLine:
        incident = job.request.incident
        now = self._clock.now()
        urgency = job.request.urgency or incident.urgency
        since = (
            from_timestamp(incident.created_at).isoformat()
            if incident.HasField("created_at")
            else ""
        )
        return IncidentLine(
            incident_id=incident.incident_id,
            service_id=incident.service_id,
            title=incident.title,
            status=STATE_NAMES.get(incident.status, "triggered"),
            urgency="high" if urgency == incident_pb2.URGENCY_HIGH else "low",
            severity=SEVERITY_NAMES.get(incident.severity, ""),
            since=since,
            runbook_url=runbook_of(dict(incident.labels)),
            **self._links(job, now),
            reminder=job.request.reminder.text,
            incident_url=(
                f"{self._console_url}/console/incidents/{quote(incident.incident_id, safe='')}"
                if job.request.HasField("reminder") and self._console_url
                else ""
            ),
        )

    def _links(self, job: Job, now: datetime) -> dict[str, str]:
        """Acknowledge/resolve links for a page; approve/reject ones (and what waits) for a
        message asking for an automation action's approval."""
        if not job.request.HasField("approval_ask"):
            return {
                "ack_url": self._link("acknowledge", job, now),
                "resolve_url": self._link("resolve", job, now),
            }
        ask = job.request.approval_ask
        expires = from_timestamp(ask.expires_at) if ask.HasField("expires_at") else None
        until = expires.isoformat(timespec="seconds") if expires is not None else ""
        return {
            "ask": f"rule {ask.rule_id} ({ask.trigger}): {ask.action}"
            + (f", until {until}" if until else ""),
            # Valid as long as the approval waits, also past links.ttl (a long approval_ttl).
            "approve_url": self._link("approve", job, now, ask.rule_id, expires),
            "reject_url": self._link("reject", job, now, ask.rule_id, expires),
        }

    def _link(
        self,
        action: str,
        job: Job,
        now: datetime,
        rule_id: str = "",
        valid_until: datetime | None = None,
    ) -> str:
        incident = job.request.incident
        return self._signer.url(
            self._public_url,
            action,
            incident.incident_id,
            incident.service_id,
            job.request.user_id,
            now,
            rule_id,
            valid_until,
        )

    def page(self, jobs: list[Job], contact: oncall_service_pb2.ContactMethod) -> Page:
        lines = tuple(self.line(job) for job in jobs)
        first, head = jobs[0], lines[0]
        reminder = first.request.reminder.kind if first.request.HasField("reminder") else ""
        subject, text = self._renderer.render(contact.type, lines, reminder=bool(reminder))
        return Page(
            incident_id=head.incident_id,
            service_id=head.service_id,
            title=head.title,
            status=head.status,
            urgency=head.urgency,
            user_id=contact.user_id or first.request.user_id,
            user_name=contact.user_name,
            address=contact.address,
            idempotency_key=first.request.idempotency_key,
            severity=head.severity,
            since=head.since,
            runbook_url=head.runbook_url,
            ack_url=head.ack_url,
            resolve_url=head.resolve_url,
            ask=head.ask,
            approve_url=head.approve_url,
            reject_url=head.reject_url,
            subject=subject,
            text=text,
            incidents=lines,
            unsigned=contact.unsigned,
            reminder=reminder,
        )
