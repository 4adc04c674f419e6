"""SMS and voice through a Twilio-compatible REST API (base URL configurable).

SMS:   POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json  To, From, Body
Voice: POST {base_url}/2010-04-01/Accounts/{sid}/Calls.json     To, From, Twiml
Both form-encoded, HTTP basic auth (account sid, auth token). The contact method's
address is the E.164 number.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from xml.sax.saxutils import escape

from tocsin_common.config.model import NotificationSettings
from tocsin_common.outgoing import DestinationPolicy

from tocsin_notification.providers.base import DeliveryError, Page
from tocsin_notification.providers.http import HttpClient

SMS_LIMIT = 1600  # Twilio's maximum body length


class _TwilioBase:
    channel = ""

    def __init__(
        self,
        *,
        base_url: str = "https://api.twilio.com",
        account_sid: str = "",
        auth_token: str = "",
        from_number: str = "",
        timeout_s: float = 10.0,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._sid = account_sid
        self._auth = {
            "Authorization": "Basic "
            + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        }
        self._from = from_number
        self._http = HttpClient(f"twilio-{self.channel}", timeout_s, destinations=destinations)

    def _url(self, resource: str) -> str:
        return f"{self._base}/2010-04-01/Accounts/{self._sid}/{resource}.json"

    def _check(self, page: Page) -> None:
        if not self._sid or not self._from:
            raise DeliveryError(
                "notification.twilio.account_sid and from_number must be set", retryable=False
            )
        if not page.address.startswith("+"):
            raise DeliveryError(
                f"address {page.address!r}: expected an E.164 number", retryable=False
            )

    async def close(self) -> None:
        await self._http.close()


def _from_settings_kwargs(settings: NotificationSettings) -> dict[str, Any]:
    twilio = settings.twilio
    return {
        "base_url": str(twilio.base_url),
        "account_sid": twilio.account_sid,
        "auth_token": os.environ.get(twilio.auth_token_env, ""),
        "from_number": twilio.from_number,
        "destinations": DestinationPolicy(settings.outgoing.allow),
    }


class SmsProvider(_TwilioBase):
    channel = "sms"

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> SmsProvider:
        return cls(**_from_settings_kwargs(settings))

    async def send(self, page: Page) -> str:
        self._check(page)
        form = {"To": page.address, "From": self._from, "Body": page.text[:SMS_LIMIT]}
        return await self._http.post(self._url("Messages"), data=form, headers=self._auth)


def twiml(text: str) -> str:
    """The voice message as TwiML: said twice, so a half-awake person catches it."""
    said = escape(" ".join(text.split()))
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Say voice="alice">{said}</Say><Pause length="1"/>'
        f'<Say voice="alice">Again. {said}</Say></Response>'
    )


class VoiceProvider(_TwilioBase):
    channel = "voice"

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> VoiceProvider:
        return cls(**_from_settings_kwargs(settings))

    async def send(self, page: Page) -> str:
        self._check(page)
        form = {"To": page.address, "From": self._from, "Twiml": twiml(page.text)}
        return await self._http.post(self._url("Calls"), data=form, headers=self._auth)
