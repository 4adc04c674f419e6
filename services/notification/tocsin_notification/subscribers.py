"""The status page's subscribers (docs/status-page.md): updates and confirmation e-mails,
run with the pages' delivery machinery.

Escalation puts each status update on notifications.requests once, as a NotificationRequest
carrying ``status_notice`` without a subscription (public fields only: no incident, no
person). Here it is fanned out: one request per confirmed subscriber of its components,
keyed by the subscription, with the idempotency key ``status/<update>/<subscription>``; the
update's record is committed only once they are all durable, so a crash repeats the fan-out
and the idempotency claims drop what was already sent. The api puts a ``confirmation``
request on the topic for each new e-mail subscription.

Each subscriber's request goes through the stages a page goes through, minus the person:
the subscription is read again (one that ended since is SKIPPED), the idempotency claim,
the endpoint's slots and circuit breaker, the retry policy, the dead letter when it gives
up; every outcome is a NotificationStatus (channel ``status-email`` or ``status-webhook``,
no incident). E-mail goes through the e-mail provider with a ``List-Unsubscribe`` header
and the unsubscribe link in the text; a webhook gets JSON signed like the webhook channel's
(``X-Tocsin-Signature``), through the outgoing-HTTP policy (no redirects, private addresses
only when allow-listed).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Protocol

from tocsin.v1 import notification_pb2
from tocsin_common.clock import Clock
from tocsin_common.config.model import TocsinConfig
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.statuspage.notices import (
    EMAIL_CHANNEL,
    WEBHOOK_CHANNEL,
    Notice,
    component_names,
    confirmation_email,
    fan_out_key,
    links_for,
    update_email,
    webhook_body,
)
from tocsin_common.statuspage.subscriptions import Subscription, recipients
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import NOTIFICATIONS_REQUESTS

from tocsin_notification.pipeline import Job, Pipeline
from tocsin_notification.pipeline.job import Attempt
from tocsin_notification.pipeline.record_stage import Producer
from tocsin_notification.providers.base import DeliveryError, Page, Provider
from tocsin_notification.providers.http import HttpClient
from tocsin_notification.providers.webhook import SIGNATURE_HEADER, sign

Outcome = notification_pb2.DeliveryOutcome

log = logging.getLogger("tocsin.notification.subscribers")

KINDS = ("update", "confirmation")


class SubscriptionReader(Protocol):
    async def get(self, subscription_id: str) -> Subscription | None: ...

    async def all(self) -> list[Subscription]: ...


def notice_of(notice: notification_pb2.StatusNotice) -> Notice:
    return Notice(
        update_id=notice.update_id,
        status=notice.status,
        title=notice.title,
        message=notice.message,
        component_ids=tuple(notice.component_ids),
        posted_at=notice.posted_at.ToDatetime(tzinfo=UTC),
    )


def missing_fields(request: notification_pb2.NotificationRequest) -> list[str]:
    """The fields a status notice request lacks (empty: it can be delivered)."""
    notice = request.status_notice
    missing = [] if request.idempotency_key else ["idempotency_key"]
    if notice.kind not in KINDS:
        return [*missing, f"status_notice.kind ({notice.kind!r} is not update or confirmation)"]
    if notice.kind == "confirmation" and not notice.subscription_id:
        missing.append("status_notice.subscription_id")
    if notice.kind == "update":
        missing += [f"status_notice.{n}" for n in ("update_id", "status") if not getattr(notice, n)]
        if not notice.component_ids:
            missing.append("status_notice.component_ids")
    return missing


class SubscriberDelivery:
    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        producer: Producer,
        store: SubscriptionReader,
        config: Callable[[], TocsinConfig],
        *,
        link_key: bytes,
        api_url: str,
        email: Provider | None,
        secret: bytes | None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._producer = producer
        self._store = store
        self._config = config
        self._key = link_key
        self._api_url = api_url.rstrip("/")
        self._email = email
        self._secret = secret
        self._http = HttpClient("status-webhook", destinations=destinations)

    async def handle(self, job: Job) -> notification_pb2.NotificationStatus | None:
        """An update without a subscription is fanned out (None: nothing to record of it);
        one subscriber's request ends with its final outcome, recorded."""
        notice = job.request.status_notice
        if not notice.subscription_id:
            await self._fan_out(job)
            return None
        return await self._one(job)

    async def _fan_out(self, job: Job) -> None:
        notice = job.request.status_notice
        now = self._clock.now()
        chosen = recipients(await self._store.all(), notice.component_ids)
        for sub in chosen:
            request = notification_pb2.NotificationRequest(
                request_id=str(uuid.uuid4()),
                idempotency_key=fan_out_key(notice.update_id, sub.subscription_id),
            )
            request.status_notice.CopyFrom(notice)
            request.status_notice.subscription_id = sub.subscription_id
            set_timestamp(request.requested_at, now)
            job.produced.append(
                await self._producer.enqueue(NOTIFICATIONS_REQUESTS, sub.subscription_id, request)
            )
        log.info(
            "status update %s: %d subscriber(s)",
            notice.update_id,
            len(chosen),
            extra={"components": list(notice.component_ids)},
        )

    async def _one(self, job: Job) -> notification_pb2.NotificationStatus:
        stages = self._pipeline
        notice = job.request.status_notice
        sub = await self._store.get(notice.subscription_id)
        wanted = "pending" if notice.kind == "confirmation" else "confirmed"
        channel = EMAIL_CHANNEL if sub is None or sub.kind == "email" else WEBHOOK_CHANNEL
        if sub is None or sub.state != wanted:
            state = "deleted" if sub is None else sub.state
            return await stages.record.record(
                job,
                channel,
                Outcome.DELIVERY_OUTCOME_SKIPPED,
                f"not sent: the subscription is {state}",
            )
        return await stages.once(
            job, channel, lambda: self._run(job, sub, channel), self._clock.sleep
        )

    def _page(self, job: Job, sub: Subscription) -> Page:
        """The e-mail to this subscriber (an update, or the confirmation request)."""
        config = self._config()
        page = config.status_page
        notice = job.request.status_notice
        links = links_for(self._api_url, self._key, sub.subscription_id)
        page_url = f"{self._api_url}/status"
        if notice.kind == "confirmation":
            names = component_names(page, sub.components)
            subject, text = confirmation_email(
                page.title, names, links, page.confirmation_ttl, page_url
            )
        else:
            update = notice_of(notice)
            names = component_names(page, update.component_ids)
            subject, text = update_email(update, names, page.title, page_url, links.unsubscribe)
        return Page(
            incident_id="",
            service_id="",
            title=subject,
            status=notice.status,
            urgency="",
            user_id="",
            user_name="",
            address=sub.address,
            idempotency_key=job.request.idempotency_key,
            subject=subject,
            text=text,
            headers=(
                ("List-Unsubscribe", f"<{links.unsubscribe}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ),
        )

    async def _send_webhook(self, job: Job, sub: Subscription) -> str:
        config = self._config()
        update = notice_of(job.request.status_notice)
        body = json.dumps(
            webhook_body(
                update,
                component_names(config.status_page, update.component_ids),
                config.status_page.title,
                f"{self._api_url}/status",
                sub.subscription_id,
                links_for(self._api_url, self._key, sub.subscription_id).unsubscribe,
            ),
            separators=(",", ":"),
        ).encode()
        if not self._secret:
            raise DeliveryError(
                "not sent: webhook subscriptions are signed and the webhook signing secret "
                "is not set (notification.webhook.signing_secret_env)",
                retryable=False,
            )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": job.request.idempotency_key,
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        return await self._http.post(sub.address, data=body, headers=headers)

    async def _run(
        self, job: Job, sub: Subscription, channel: str
    ) -> notification_pb2.NotificationStatus:
        stages = self._pipeline

        async def attempt(number: int) -> str:
            await stages.idempotency.renew([job])
            if sub.kind == "webhook":
                return await stages.send.call(sub.address, lambda: self._send_webhook(job, sub))
            if self._email is None:
                raise DeliveryError("not sent: no e-mail provider", retryable=False)
            return await stages.send.send(self._email, self._page(job, sub))

        async def on_retry(failed: Attempt, wait: float) -> None:
            await stages.record.record(
                job,
                channel,
                Outcome.DELIVERY_OUTCOME_RETRYING,
                f"{failed.error}; next attempt in {wait:.1f}s",
                failed.attempt,
            )

        result = await stages.retry.run(attempt, on_retry)
        if result.receipt is not None:
            await stages.mark_delivered([job])
            return await stages.record.record(
                job, channel, Outcome.DELIVERY_OUTCOME_DELIVERED, result.receipt, result.attempts
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
            job, channel, Outcome.DELIVERY_OUTCOME_FAILED, reason, len(result.history)
        )

    async def close(self) -> None:
        await self._http.close()
