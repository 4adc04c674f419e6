"""Email over SMTP (stdlib smtplib in a worker thread), with STARTTLS and AUTH from
`notification.email`. The contact method's address is the recipient."""

from __future__ import annotations

import asyncio
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from tocsin_common.config.model import NotificationSettings
from tocsin_common.tracing import tracer

from tocsin_notification.providers.base import DeliveryError, Page


class EmailProvider:
    channel = "email"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        sender: str = "tocsin@localhost",
        timeout_s: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._starttls = starttls
        self._username = username
        self._password = password or ""
        self._sender = sender
        self._timeout = timeout_s
        self._tls = tls_context
        self._tracer = tracer("tocsin.notification.email")

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> EmailProvider:
        email = settings.email
        return cls(
            host=email.smtp_host,
            port=email.smtp_port,
            starttls=email.starttls,
            username=email.username,
            password=os.environ.get(email.password_env, "") if email.password_env else None,
            sender=email.from_,
        )

    def message(self, page: Page) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._sender
        msg["To"] = page.address
        msg["Subject"] = page.subject
        msg["Message-ID"] = make_msgid(domain="tocsin")
        if page.incident_id:
            msg["X-Tocsin-Incident"] = page.incident_id
        msg["X-Tocsin-Idempotency-Key"] = page.idempotency_key
        for name, value in page.headers:
            msg[name] = value
        msg.set_content(page.text)
        return msg

    def _send_blocking(self, msg: EmailMessage) -> str:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            smtp.ehlo()
            if self._starttls:
                smtp.starttls(context=self._tls or ssl.create_default_context())
                smtp.ehlo()
            if self._username:
                smtp.login(self._username, self._password)
            refused = smtp.send_message(msg)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
        return "SMTP 250"

    async def send(self, page: Page) -> str:
        msg = self.message(page)
        with self._tracer.start_as_current_span(
            "email SMTP", attributes={"server.address": self._host, "server.port": self._port}
        ):
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    None, self._send_blocking, msg
                )
            except smtplib.SMTPResponseException as e:
                # 4xx: transient (greylisting, mailbox busy); 5xx: permanent.
                raise DeliveryError(
                    f"SMTP {e.smtp_code}: {e.smtp_error!r}", retryable=400 <= e.smtp_code < 500
                ) from e
            except smtplib.SMTPRecipientsRefused as e:
                codes = [code for code, _ in e.recipients.values()]
                raise DeliveryError(
                    f"recipient refused: {e.recipients}",
                    retryable=all(400 <= c < 500 for c in codes),
                ) from e
            except smtplib.SMTPNotSupportedError as e:
                raise DeliveryError(f"SMTP: {e}", retryable=False) from e
            except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as e:
                raise DeliveryError(f"{type(e).__name__}: {e}", retryable=True) from e

    async def close(self) -> None:
        pass
