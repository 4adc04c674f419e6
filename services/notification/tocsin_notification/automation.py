"""Automation actions (docs/automation.md): the HTTP request an automation rule sends to a
runbook runner, run with the pages' delivery machinery.

Escalation plans the firing and puts it on notifications.requests as a NotificationRequest
carrying ``automation`` (keyed by incident). Here it goes through the same stages as a page,
minus the person: the idempotency claim on the firing's key (once per incident, rule and
trigger, across redelivery and a SIGKILL), the endpoint's slots and circuit breaker, the
retry policy, the dead letter when it gives up; every outcome is a NotificationStatus, and
the request, the response's status and an excerpt of its body are a note on the incident's
timeline by ``automation:<rule>``.

The request is signed like webhooks (``X-Tocsin-Signature``) unless the rule says
``signed: false``, and carries ``Idempotency-Key: <the firing's key>`` so a runner can
drop a repeat (an action whose answer was lost in a crash, before it was marked done, is
sent again when its lease runs out).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Literal

import aiohttp
from redis.exceptions import RedisError
from tocsin.v1 import notification_pb2
from tocsin_common.automation import CHANNEL
from tocsin_common.automation.approval import Approval, current
from tocsin_common.clock import Clock
from tocsin_common.config.model import NotificationSettings
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.outgoing_http import redacted_url
from tocsin_common.secrets import read_secret
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import NOTIFICATIONS_REQUESTS

from tocsin_notification.approvals import ApprovalStore, approved
from tocsin_notification.pipeline import Job, Pipeline
from tocsin_notification.pipeline.job import Attempt
from tocsin_notification.pipeline.record_stage import Producer
from tocsin_notification.providers.base import DeliveryError
from tocsin_notification.providers.http import HttpClient
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, sign

Outcome = notification_pb2.DeliveryOutcome
log = logging.getLogger("tocsin.notification.automation")

EXCERPT_CHARS = 300
# How often the expiry sweep looks for approvals that expired undecided (one sorted-set
# read when none did).
EXPIRY_SWEEP_S = 2.0


def describe(action: notification_pb2.AutomationAction) -> str:
    """``rule restart-checkout (level 2): POST https://runner.example.com/…`` (the URL
    redacted: its path may be a credential, as a webhook's is)."""
    return f"rule {action.rule_id} ({action.trigger}): {action.method} {redacted_url(action.url)}"


def headers_for(
    action: notification_pb2.AutomationAction,
    key: str,
    body: bytes,
    secret: bytes | None,
    now_s: int,
) -> dict[str, str]:
    """The request's headers; DeliveryError (final) when it must be signed and there is
    no secret."""
    headers = {"Content-Type": action.content_type or "application/json", "Idempotency-Key": key}
    if action.signed:
        if not secret:
            raise DeliveryError(
                "not sent: the action is signed but the webhook signing secret is not set "
                "(notification.webhook.signing_secret_env)",
                retryable=False,
            )
        headers[SIGNATURE_HEADER] = sign(secret, body, now_s)
    return headers


def ask_requests(
    request: notification_pb2.NotificationRequest, pending: Approval
) -> list[notification_pb2.NotificationRequest]:
    """The messages asking each approver of the waiting action for its approval, as pages
    to their contact methods; each keyed by the firing, the person and the method."""
    action = request.automation
    asks = []
    for approver in action.approvers:
        ask = notification_pb2.NotificationRequest(
            request_id=str(uuid.uuid4()),
            idempotency_key=(
                f"{request.idempotency_key}/ask/{approver.user_id}/{approver.contact_method_id}"
            ),
            incident=request.incident,
            user_id=approver.user_id,
            contact_method_id=approver.contact_method_id,
            urgency=request.urgency or request.incident.urgency,
            approval_ask=notification_pb2.ApprovalAsk(
                rule_id=action.rule_id,
                trigger=action.trigger,
                action=f"{action.method or 'POST'} {redacted_url(action.url)}",
            ),
        )
        set_timestamp(ask.approval_ask.expires_at, pending.expires_at)
        set_timestamp(ask.requested_at, pending.requested_at)
        asks.append(ask)
    return asks


class AutomationRunner:
    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        approvals: ApprovalStore,
        producer: Producer,
        *,
        secret: bytes | None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._approvals = approvals
        self.approvals = approvals
        self._producer = producer
        self._secret = secret
        self._http = HttpClient("automation", destinations=destinations)

    @classmethod
    def from_settings(
        cls,
        pipeline: Pipeline,
        clock: Clock,
        approvals: ApprovalStore,
        producer: Producer,
        settings: NotificationSettings,
    ) -> AutomationRunner:
        name = settings.webhook.signing_secret_env
        secret = read_secret(name, required=False) if name else None
        return cls(
            pipeline,
            clock,
            approvals,
            producer,
            secret=secret.encode() if secret else None,
            destinations=DestinationPolicy(settings.outgoing.allow),
        )

    def now(self) -> datetime:
        return self._clock.now()

    async def decide(
        self,
        incident_id: str,
        rule_id: str,
        verdict: Literal["approve", "reject"],
        actor: str,
        reason: str = "",
    ) -> list[Approval]:
        """A person's decision on the rule's pending actions on the incident: approved
        ones go back on notifications.requests to run (carrying who approved them),
        rejected ones are recorded. LookupError: none; ApprovalConflict: none pending."""
        decided = await self._approvals.decide(
            incident_id, rule_id, verdict, actor, self._clock.now(), reason
        )
        record = self._pipeline.record
        for approval, request in decided:
            job = Job(request)
            what = describe(request.automation)
            because = f": {approval.reason}" if approval.reason else ""
            if approval.state == "approved":
                future = await self._producer.enqueue(
                    NOTIFICATIONS_REQUESTS, incident_id, approved(request, actor)
                )
                job.produced.append(future)
                await record.note(request, f"Automation {what} approved by {actor}{because}")
            else:
                await record.record(
                    job,
                    CHANNEL,
                    Outcome.DELIVERY_OUTCOME_REJECTED,
                    f"rejected by {actor}{because}",
                    note=f"Automation {what} rejected by {actor}{because}",
                )
            await asyncio.gather(*job.produced)
        return [approval for approval, _ in decided]

    async def sweep_expired(self) -> list[Approval]:
        """One pass of the expiry sweep: approvals that expired undecided become
        ``expired``, each with its timeline entry (docs/automation.md#approval)."""
        expired = await self._approvals.expire_due(self._clock.now(), describe)
        for approval in expired:
            log.info(
                "automation approval expired",
                extra={"incident_id": approval.incident_id, "rule_id": approval.rule_id},
            )
        return expired

    async def run_expiry_sweep(self, every_s: float = EXPIRY_SWEEP_S) -> None:
        """The sweep, for as long as the process runs (a Redis error waits for the next
        pass: nothing is lost, the list keeps the firing until it is handled)."""
        while True:
            try:
                await self.sweep_expired()
            except (RedisError, OSError):
                log.warning("automation expiry sweep failed; trying again", exc_info=True)
            await self._clock.sleep(every_s)

    async def _await_approval(self, job: Job) -> notification_pb2.NotificationStatus:
        request = job.request
        record = self._pipeline.record
        now = self._clock.now()
        pending = await self._approvals.open(request, now)
        if pending is None:
            # A redelivery or a replay: ask again while it waits (each ask's key makes a
            # message already sent a duplicate), in case the first try died before asking.
            stored = await self._approvals.get(request.idempotency_key)
            if stored is not None and current(stored[0], now).state == "pending":
                await self._ask(job, stored[0])
            return await record.record(
                job, CHANNEL, Outcome.DELIVERY_OUTCOME_DUPLICATE, "already waits for approval"
            )
        asked = await self._ask(job, pending)
        action = request.automation
        where = (
            f"POST /api/v1/incidents/{request.incident.incident_id}/automation/"
            f"{action.rule_id}/approve"
        )
        who = f"asked {', '.join(asked)} with signed links; or " if asked else ""
        until = pending.expires_at.isoformat(timespec="seconds")
        return await record.record(
            job,
            CHANNEL,
            Outcome.DELIVERY_OUTCOME_AWAITING_APPROVAL,
            f"waits for approval until {until}",
            note=f"Automation {describe(action)} waits for approval until {until} "
            f"({who}{where})",
        )

    async def _ask(self, job: Job, pending: Approval) -> list[str]:
        """A message to each approver escalation named, with signed approve/reject links
        (on notifications.requests, as a page: the pipeline delivers it once per key).
        Returns who was asked."""
        asked: list[str] = []
        for ask in ask_requests(job.request, pending):
            job.produced.append(
                await self._producer.enqueue(NOTIFICATIONS_REQUESTS, ask.user_id, ask)
            )
            if ask.user_id not in asked:
                asked.append(ask.user_id)
        return asked

    async def firings(self, incident_id: str, rule_id: str) -> list[Approval]:
        """The rule's firings on the incident that wait or waited for approval, as of now."""
        return [
            approval
            for approval, _ in await self._approvals.of_rule(
                incident_id, rule_id, self._clock.now()
            )
        ]

    async def _check_approved(self, job: Job) -> notification_pb2.NotificationStatus | None:
        """None when the request's approval is on record; else its refusal, recorded."""
        stored = await self._approvals.get(job.request.idempotency_key)
        if stored is not None and stored[0].state == "approved":
            return None
        state = stored[0].state if stored is not None else "missing"
        return await self._pipeline.record.record(
            job, CHANNEL, Outcome.DELIVERY_OUTCOME_FAILED, f"not run: its approval is {state}"
        )

    async def handle(self, job: Job) -> notification_pb2.NotificationStatus:
        """The action's final outcome, recorded (DELIVERED, DUPLICATE, or FAILED and
        dead-lettered). Raises when Redis or Kafka fails: the consumer retries the record."""
        stages = self._pipeline
        action = job.request.automation
        if action.requires_approval:
            if not action.approved_by:
                return await self._await_approval(job)
            refused = await self._check_approved(job)
            if refused is not None:
                return refused
        return await stages.once(job, CHANNEL, lambda: self._run(job), self._clock.sleep)

    async def _run(self, job: Job) -> notification_pb2.NotificationStatus:
        stages = self._pipeline
        action = job.request.automation
        what = describe(action)
        by = f" (approved by {action.approved_by})" if action.approved_by else ""
        body = action.body.encode()
        timeout = aiohttp.ClientTimeout(total=max(action.timeout_ms, 1) / 1000)

        async def attempt(number: int) -> str:
            await stages.idempotency.renew([job])
            headers = headers_for(
                action, job.request.idempotency_key, body, self._secret, int(time.time())
            )

            async def send() -> str:
                return await self._http.request(
                    action.method or "POST",
                    action.url,
                    excerpt=EXCERPT_CHARS,
                    data=body if action.method != "GET" else None,
                    headers=headers,
                    timeout=timeout,
                )

            return await stages.send.call(action.url, send)

        async def on_retry(failed: Attempt, wait: float) -> None:
            await stages.record.record(
                job,
                CHANNEL,
                Outcome.DELIVERY_OUTCOME_RETRYING,
                f"{failed.error}; next attempt in {wait:.1f}s",
                failed.attempt,
                note=f"Automation {what}: attempt {failed.attempt} failed: {failed.error}; "
                f"next attempt in {wait:.1f}s",
            )

        result = await stages.retry.run(attempt, on_retry)
        if result.receipt is not None:
            await stages.mark_delivered([job])
            return await stages.record.record(
                job,
                CHANNEL,
                Outcome.DELIVERY_OUTCOME_DELIVERED,
                result.receipt,
                result.attempts,
                note=f"Automation {what}{by} → {result.receipt}",
            )
        await stages.idempotency.release([job])
        last = result.history[-1]
        reason = (
            f"gave up after {len(result.history)} attempts: {last.error}"
            if last.retryable
            else f"not retryable: {last.error}"
        )
        await stages.record.dead_letter(job, reason, result.history)
        return await stages.record.record(
            job,
            CHANNEL,
            Outcome.DELIVERY_OUTCOME_FAILED,
            reason,
            len(result.history),
            note=f"Automation {what} failed: {reason}",
        )

    async def close(self) -> None:
        await self._http.close()
