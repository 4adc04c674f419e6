"""What every HTTP provider shares: one session, the outgoing destination policy, no
redirects, and one rule for which answers retry.

Every request goes through a connector that refuses loopback, private, link-local and
other non-public addresses unless `notification.outgoing.allow` lists them; the check is
on the resolved address right before connecting (tocsin_common.outgoing_http). Redirects
are never followed: a 3xx is a final failure. Spans and error messages name the URL as
`scheme://host[:port]/…` only: a Slack or Teams webhook path is a credential, and a
Twilio path names the account.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import yarl
from opentelemetry.trace import Status, StatusCode
from tocsin_common.outgoing import DestinationPolicy
from tocsin_common.outgoing_http import destination_refused, guarded_connector, redacted_url
from tocsin_common.tracing import inject_http_headers, spans_exported, tracer

from tocsin_notification.providers.base import DeliveryError


def classify(status: int, body: str = "") -> DeliveryError | None:
    """None for 2xx (and 1xx); a final error for 3xx (redirects are not followed) and 4xx
    other than 408/425/429; a retryable one for 5xx, 408, 425 and 429."""
    if status < 300:
        return None
    if status < 400:
        return DeliveryError(f"HTTP {status}: redirects are not followed", retryable=False)
    detail = f"HTTP {status}" + (f": {body[:200]}" if body else "")
    return DeliveryError(detail, retryable=status >= 500 or status in (408, 425, 429))


def scrub(text: str, url: str) -> str:
    """``text`` with ``url`` (as given and as encoded) replaced by its redacted form."""
    redacted = redacted_url(url)
    for form in {url, str(yarl.URL(url)), url.split("?", 1)[0]}:
        if form:
            text = text.replace(form, redacted)
    return text


class HttpClient:
    """`spans` False (by default when this process exports no spans): no CLIENT span per
    request, which would be thrown away unseen (it cost ~10 us a page); the request still
    carries the current trace context in its headers.

    `destinations`: where requests may go; None refuses every non-public address."""

    def __init__(
        self,
        name: str,
        timeout_s: float = 10.0,
        *,
        spans: bool | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._tracer = tracer(f"tocsin.notification.{name}")
        self._spans = spans_exported() if spans is None else spans
        self._name = name
        self._policy = destinations if destinations is not None else DestinationPolicy()
        self._urls: dict[str, yarl.URL] = {}

    async def post(self, url: str, **kwargs: Any) -> str:
        """POST; return 'HTTP <status>' or raise a classified DeliveryError."""
        return await self.request("POST", url, **kwargs)

    async def request(self, method: str, url: str, *, excerpt: int = 0, **kwargs: Any) -> str:
        """``method``; return 'HTTP <status>' (with ``excerpt`` > 0, followed by ': ' and at
        most that many characters of the answer's body) or raise a classified
        DeliveryError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # Above the consumer's pages in flight: a request never waits for a
                # connection inside its timeout (SendStage bounds each endpoint).
                connector=guarded_connector(self._policy, limit=1024),
                trust_env=False,  # no proxy from the environment: the policy sees the peer
            )
        headers: dict[str, str] = dict(kwargs.pop("headers", {}) or {})
        if not self._spans:
            return await self._post(self._session, url, headers, kwargs, method, excerpt)
        parsed = self._url(url)
        with self._tracer.start_as_current_span(
            f"{self._name} {method}",
            attributes={
                "http.request.method": method,
                "url.full": redacted_url(url),
                "server.address": parsed.host or "",
                "server.port": parsed.port or 0,
            },
            # The exception's chain could name the URL: the status is set, scrubbed, below.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._post(self._session, url, headers, kwargs, method, excerpt)
            except DeliveryError as e:
                span.set_status(Status(StatusCode.ERROR, str(e)))
                span.set_attribute("error.type", "retryable" if e.retryable else "final")
                raise

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        kwargs: dict[str, Any],
        method: str = "POST",
        excerpt: int = 0,
    ) -> str:
        inject_http_headers(headers)
        try:
            async with session.request(
                method, self._url(url), headers=headers, allow_redirects=False, **kwargs
            ) as response:
                if response.status < 300:
                    if excerpt <= 0:
                        await response.read()  # the body is not needed, only the connection
                        return f"HTTP {response.status}"
                    text = await response.text(errors="replace")
                    shown = scrub(text[:excerpt], url).strip()
                    return f"HTTP {response.status}" + (f": {shown}" if shown else "")
                body = "" if response.status < 400 else await response.text(errors="replace")
                error = classify(response.status, scrub(body, url))
                assert error is not None
                raise error
        except aiohttp.InvalidURL as e:
            raise DeliveryError(scrub(f"invalid URL: {e}", url), retryable=False) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            refused = destination_refused(e)
            if refused is not None:
                raise DeliveryError(str(refused), retryable=False) from None
            # from None: the aiohttp error's own text may carry the whole URL.
            raise DeliveryError(scrub(f"{type(e).__name__}: {e}", url), retryable=True) from None

    def _url(self, url: str) -> yarl.URL:
        """The parsed URL, kept: a webhook's address is the same page after page."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 10_000:
                self._urls.clear()
            parsed = self._urls[url] = yarl.URL(url)
        return parsed

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
