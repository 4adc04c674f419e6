"""What every HTTP provider shares: one session, and one rule for which answers retry."""

from __future__ import annotations

from typing import Any

import aiohttp
import yarl
from tocsin_common.tracing import inject_http_headers, spans_exported, tracer

from tocsin_notification.providers.base import DeliveryError


def classify(status: int, body: str = "") -> DeliveryError | None:
    """None for 2xx/3xx; a retryable error for 5xx and 429; a final one for other 4xx."""
    if status < 400:
        return None
    detail = f"HTTP {status}" + (f": {body[:200]}" if body else "")
    return DeliveryError(detail, retryable=status >= 500 or status in (408, 425, 429))


class HttpClient:
    """`spans` False (by default when this process exports no spans): no CLIENT span per
    request, which would be thrown away unseen (it cost ~10 us a page); the request still
    carries the current trace context in its headers."""

    def __init__(self, name: str, timeout_s: float = 10.0, *, spans: bool | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._tracer = tracer(f"tocsin.notification.{name}")
        self._spans = spans_exported() if spans is None else spans
        self._name = name
        self._urls: dict[str, yarl.URL] = {}

    async def post(self, url: str, **kwargs: Any) -> str:
        """POST; return 'HTTP <status>' or raise a classified DeliveryError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # Above the consumer's pages in flight: a request never waits for a
                # connection inside its timeout (SendStage bounds each endpoint).
                connector=aiohttp.TCPConnector(limit=1024),
            )
        headers: dict[str, str] = dict(kwargs.pop("headers", {}) or {})
        if not self._spans:
            return await self._post(self._session, url, headers, kwargs)
        with self._tracer.start_as_current_span(
            f"{self._name} POST", attributes={"url.full": url.split("?")[0]}
        ):
            return await self._post(self._session, url, headers, kwargs)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        kwargs: dict[str, Any],
    ) -> str:
        inject_http_headers(headers)
        try:
            async with session.post(self._url(url), headers=headers, **kwargs) as response:
                if response.status < 400:
                    await response.read()  # the body is not needed, only the connection
                    return f"HTTP {response.status}"
                error = classify(response.status, await response.text(errors="replace"))
                assert error is not None
                raise error
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}", retryable=True) from e

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
