"""Delivery channels: how one notification reaches one recipient.

One small contract (`Channel.send(message)`), three adapters and a fake:

- `EmailChannel`: SMTP with the standard library (`smtp://`, `smtps://`, `?starttls=true`).
- `WebhookSmsChannel`: POST `{"to", "body"}` as JSON to an HTTPS gateway, bearer token.
- `TwilioSmsChannel`: Twilio's Messages API (form data, basic auth), or a compatible one.
- `RecordingChannel`: the fake for unit tests of the outbox and routing.

`send` returns when the server has accepted the message, or raises `DeliveryFailed` whose
`retry` says whether trying again later can help. Only a refusal of *this* message is final
(the recipient refused with 5xx, the content refused, HTTP 400/404/422...); a server that is
down, slow, busy (4xx, 429, 5xx) or refusing our credentials is retried, since the operator
can fix the setting and the outbox then delivers what waited. Messages name the setting to
check and never carry a password or token.

Exactly once: the outbox calls `send` until it returns once. When the server's "accepted"
is lost on the way back, the retry sends the message again; `dedup_key` travels with it
(the email's Message-ID, the webhook's Idempotency-Key) so the receiving side can drop it.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from abc import ABC, abstractmethod
from collections import deque
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from tenantry.core.config import Settings
from tenantry.core.errors import Unavailable
from tenantry.core.notify import (
    E164,
    EMAIL_ADDRESS,
    SmtpEndpoint,
    TwilioSmsEndpoint,
    WebhookSmsEndpoint,
    sms_endpoint,
    smtp_endpoint,
)

DEFAULT_TIMEOUT = 10.0  # seconds for each connect, read or write; the outbox retries later


class Message(BaseModel):
    """One notification to one recipient (an email address, or +NUMBER for SMS)."""

    model_config = ConfigDict(frozen=True)
    to: str = Field(min_length=1, max_length=320)
    subject: str = Field(max_length=200)
    body: str = Field(max_length=20_000)
    # The outbox's (alert, state, recipient, channel), as text: the same key, the same message.
    dedup_key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@+=-]+$")

    @field_validator("to", "subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:  # a header injection, in an email
            raise ValueError("must be one line")
        return value


class DeliveryFailed(Unavailable):
    """The server did not accept the message; `retry` says whether a later try can help."""

    code = "delivery_failed"

    def __init__(self, message: str, *, retry: bool, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry = retry


class Channel(ABC):
    kind: str  # "email", "sms": what a contact's address is for

    @abstractmethod
    def send(self, message: Message) -> None:
        """Return once the server accepted `message`; else raise `DeliveryFailed`."""


class RecordingChannel(Channel):
    """The fake: records every attempt; `fail_next` scripts the failures to raise first."""

    def __init__(self, kind: str = "email") -> None:
        self.kind = kind
        self.attempts: list[Message] = []
        self.sent: list[Message] = []
        self._failures: deque[DeliveryFailed] = deque()

    def __repr__(self) -> str:
        return f"RecordingChannel({self.kind!r}, sent={len(self.sent)})"

    def fail_next(self, *failures: DeliveryFailed) -> None:
        self._failures.extend(failures)

    def send(self, message: Message) -> None:
        self.attempts.append(message)
        if self._failures:
            raise self._failures.popleft()
        self.sent.append(message)


def _redact(text: str, *secrets: SecretStr | None) -> str:
    for secret in secrets:
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "**********")
    return text


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


# ---------------------------------------------------------------- email

class EmailChannel(Channel):
    kind = "email"

    def __init__(self, endpoint: SmtpEndpoint, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def __repr__(self) -> str:
        e = self.endpoint
        return (f"EmailChannel({e.host}:{e.port}, security={e.security!r}, "
                f"username={e.username!r}, password='**********')")

    def compose(self, message: Message) -> EmailMessage:
        e = self.endpoint
        mail = EmailMessage()
        mail["From"] = e.sender_header
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        # The same dedup key gives the same Message-ID: a mail client shows a resent one once.
        digest = hashlib.sha256(message.dedup_key.encode()).hexdigest()[:32]
        mail["Message-ID"] = f"<{digest}@{e.sender.rpartition('@')[2]}>"
        mail["X-Tenantry-Dedup-Key"] = message.dedup_key
        mail.set_content(message.body)
        return mail

    def send(self, message: Message) -> None:
        e = self.endpoint
        if not EMAIL_ADDRESS.fullmatch(message.to):
            raise DeliveryFailed(f"{message.to!r} is not an email address", retry=False,
                                 field="to")
        mail = self.compose(message)
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            raise self._failed("could not connect", exc) from None
        try:
            if e.security == "starttls":
                smtp.starttls(context=_tls_context(e.ca_file))
            if e.username is not None and e.password is not None:
                smtp.login(e.username, e.password.get_secret_value())
            smtp.send_message(mail, from_addr=e.sender, to_addrs=[message.to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(message.to, (0, b""))
            raise self._refused(f"refused the recipient {message.to}", code, reply,
                                final=code >= 500, field="to") from None
        except smtplib.SMTPDataError as exc:
            raise self._refused("refused the message", exc.smtp_code, exc.smtp_error,
                                final=exc.smtp_code >= 500) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise self._refused(f"refused the login of {e.username!r} (check the user and "
                                "password in TENANTRY_SMTP_URL)", exc.smtp_code,
                                exc.smtp_error, final=False) from None
        except smtplib.SMTPSenderRefused as exc:
            raise self._refused(f"refused the sender {e.sender} (check TENANTRY_SMTP_FROM)",
                                exc.smtp_code, exc.smtp_error, final=False,
                                field="smtp_from") from None
        except smtplib.SMTPResponseException as exc:
            raise self._refused("answered", exc.smtp_code, exc.smtp_error,
                                final=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise self._failed("failed", exc) from None
        finally:
            # Accepted is accepted: a QUIT that fails afterwards must not turn into a retry
            # (that would deliver the message twice).
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _connect(self) -> smtplib.SMTP:
        e = self.endpoint
        if e.security == "tls":
            return smtplib.SMTP_SSL(e.host, e.port, timeout=self.timeout,
                                    context=_tls_context(e.ca_file))
        return smtplib.SMTP(e.host, e.port, timeout=self.timeout)

    def _where(self) -> str:
        return f"SMTP server {self.endpoint.host}:{self.endpoint.port}"

    def _failed(self, doing: str, exc: BaseException) -> DeliveryFailed:
        text = f"{self._where()}: {doing}: {type(exc).__name__}: {exc}".rstrip(": ")
        return DeliveryFailed(_redact(text, self.endpoint.password), retry=True,
                              field="smtp_url")

    def _refused(self, what: str, code: int, reply: bytes | str, *, final: bool,
                 field: str = "smtp_url") -> DeliveryFailed:
        said = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        text = f"{self._where()} {what}: {code} {said}"
        return DeliveryFailed(_redact(text, self.endpoint.password), retry=not final,
                              field=field)


# ---------------------------------------------------------------- SMS

# HTTP answers that a later try can help with: busy, down, or credentials to fix.
_RETRY_STATUSES = frozenset({401, 403, 408, 409, 425, 429})


class _HttpSmsChannel(Channel):
    kind = "sms"
    _secrets: tuple[SecretStr | None, ...] = ()

    def __init__(self, *, ca_file: Path | None, timeout: float) -> None:
        self._ca_file = ca_file
        self.timeout = timeout

    def _post(self, url: str, *, where: str, **request: Any) -> None:
        try:
            with httpx.Client(timeout=self.timeout, verify=_tls_context(self._ca_file),
                              follow_redirects=False) as client:
                response = client.post(url, **request)
        except httpx.TimeoutException as exc:
            raise self._failed(f"{where} did not answer in time ({type(exc).__name__})",
                               retry=True) from None
        except httpx.HTTPError as exc:
            raise self._failed(f"{where} is unreachable: {type(exc).__name__}: {exc}",
                               retry=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retry = status >= 500 or status in _RETRY_STATUSES
        raise self._failed(f"{where} answered {status}: {response.text[:300]}", retry=retry)

    def _failed(self, text: str, *, retry: bool) -> DeliveryFailed:
        return DeliveryFailed(_redact(text, *self._secrets), retry=retry, field="sms_url")

    @staticmethod
    def _number(message: Message) -> str:
        if not E164.fullmatch(message.to):
            raise DeliveryFailed(f"{message.to!r} is not a phone number as +NUMBER",
                                 retry=False, field="to")
        return message.to


class WebhookSmsChannel(_HttpSmsChannel):
    def __init__(self, endpoint: WebhookSmsEndpoint, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(ca_file=endpoint.ca_file, timeout=timeout)
        self.endpoint = endpoint
        self._secrets = (endpoint.token,)

    @property
    def origin(self) -> str:
        """scheme://host:port only: many gateways put a token in the path or query."""
        parts = urlsplit(self.endpoint.url)
        return f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:
        return f"WebhookSmsChannel({self.origin!r}, token='**********')"

    def send(self, message: Message) -> None:
        headers = {"Idempotency-Key": message.dedup_key}
        if self.endpoint.token is not None:
            headers["Authorization"] = f"Bearer {self.endpoint.token.get_secret_value()}"
        self._post(self.endpoint.url, where=f"SMS gateway {self.origin}",
                   json={"to": self._number(message), "body": message.body}, headers=headers)


class TwilioSmsChannel(_HttpSmsChannel):
    def __init__(self, endpoint: TwilioSmsEndpoint, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(ca_file=endpoint.ca_file, timeout=timeout)
        self.endpoint = endpoint
        self._secrets = (endpoint.auth_token,)

    def __repr__(self) -> str:
        e = self.endpoint
        return (f"TwilioSmsChannel({e.base_url!r}, account_sid={e.account_sid!r}, "
                f"auth_token='**********', sender={e.sender!r})")

    def send(self, message: Message) -> None:
        e = self.endpoint
        self._post(f"{e.base_url}/2010-04-01/Accounts/{e.account_sid}/Messages.json",
                   where=f"Twilio API {e.base_url}",
                   data={"To": self._number(message), "From": e.sender, "Body": message.body},
                   auth=(e.account_sid, e.auth_token.get_secret_value()))


def open_channels(settings: Settings, *,
                  timeout: float = DEFAULT_TIMEOUT) -> dict[str, Channel]:
    """The channels the settings configure, by kind; none when none is set (the outbox
    then keeps the notifications, shown in the portal)."""
    found: dict[str, Channel] = {}
    smtp = smtp_endpoint(settings)
    if smtp is not None:
        found["email"] = EmailChannel(smtp, timeout=timeout)
    sms = sms_endpoint(settings)
    if isinstance(sms, TwilioSmsEndpoint):
        found["sms"] = TwilioSmsChannel(sms, timeout=timeout)
    elif sms is not None:
        found["sms"] = WebhookSmsChannel(sms, timeout=timeout)
    return found
