"""Notification channel settings (TENANTRY_SMTP_URL, TENANTRY_SMS_URL, ...), parsed.

Parsed here, in core, so that a wrong URL stops `up` at start rather than at the first
alert (core imports no domain; `tenantry.monitoring.channels` sends through them). Messages
name the setting and never quote the URL: it holds credentials.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from tenantry.core.errors import InvalidInput

if TYPE_CHECKING:
    from tenantry.core.config import Settings


class SmtpEndpoint(BaseModel):
    """`smtp://[USER:PASS@]HOST:PORT[?starttls=true]` or `smtps://...` (TLS from the start)."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int
    security: Literal["none", "starttls", "tls"]
    username: str | None = None
    password: SecretStr | None = None
    sender: str  # the bare address of smtp_from
    sender_header: str  # smtp_from as given, display name included
    ca_file: Path | None = None


class WebhookSmsEndpoint(BaseModel):
    """`https://[TOKEN@]HOST[:PORT]/PATH`: POST `{"to", "body"}` as JSON."""

    model_config = ConfigDict(frozen=True)
    url: str  # without the userinfo
    token: SecretStr | None = None
    ca_file: Path | None = None


class TwilioSmsEndpoint(BaseModel):
    """`twilio://ACCOUNT_SID:AUTH_TOKEN@HOST[:PORT]?from=+NUMBER`: Twilio's Messages API at
    https://HOST[:PORT] (api.twilio.com, or a compatible gateway, or a test server)."""

    model_config = ConfigDict(frozen=True)
    base_url: str
    account_sid: str
    auth_token: SecretStr
    sender: str
    ca_file: Path | None = None


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
EMAIL_ADDRESS = re.compile(r"[^@\s<>(),;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TWILIO_SID = re.compile(r"[A-Za-z0-9]{2,64}")
# Messages say it without brackets: the CLI prints errors as Rich markup.
_SMTP_FORMS = ("must be smtp://HOST:PORT or smtp://USER:PASS@HOST:PORT?starttls=true, "
               "or smtps://USER:PASS@HOST:PORT (TLS from the start)")
_SMS_FORMS = ("must be https://HOST/PATH or https://TOKEN@HOST:PORT/PATH (a webhook), or "
              "twilio://ACCOUNT_SID:AUTH_TOKEN@HOST?from=+NUMBER")


def _host_port(value: str, field: str, forms: str,
               *, port_required: bool) -> tuple[SplitResult, str, int | None]:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"not a URL with a valid port: {forms}", field=field) from None
    if not parts.hostname:
        raise InvalidInput(f"the host is missing: {forms}", field=field)
    if port_required and port is None:
        raise InvalidInput(f"the port is missing: {forms}", field=field)
    if parts.fragment:
        raise InvalidInput(f"a fragment is not allowed: {forms}", field=field)
    return parts, parts.hostname, port


def _query(parts: SplitResult) -> dict[str, list[str]]:
    # Not parse_qs: it reads "+" as a space, and ?from=+15550001111 means the plus.
    found: dict[str, list[str]] = {}
    for pair in filter(None, parts.query.split("&")):
        name, _, value = pair.partition("=")
        found.setdefault(unquote(name), []).append(unquote(value))
    return found


def _ca_file(path: Path | None, field: str) -> Path | None:
    if path is not None and not path.is_file():
        raise InvalidInput(f"{path} is not a readable file of PEM certificates", field=field)
    return path


def parse_smtp_from(value: str) -> tuple[str, str]:
    """(bare address, header value) of `noc@example.com` or `NOC <noc@example.com>`."""
    name, address = parseaddr(value)
    if not EMAIL_ADDRESS.fullmatch(address) or "\n" in value or "\r" in value:
        raise InvalidInput("must be an email address, e.g. NOC <noc@example.com>",
                           field="smtp_from")
    return address, formataddr((name, address))


def parse_smtp_url(value: str, *, sender: str = "noc@localhost",
                   ca_file: Path | None = None) -> SmtpEndpoint:
    parts, host, port = _host_port(value, "smtp_url", _SMTP_FORMS, port_required=True)
    if parts.scheme not in ("smtp", "smtps"):
        raise InvalidInput(f"scheme {parts.scheme!r} is not supported: {_SMTP_FORMS}",
                           field="smtp_url")
    if parts.path not in ("", "/"):
        raise InvalidInput(f"a path is not allowed: {_SMTP_FORMS}", field="smtp_url")
    query = _query(parts)
    if set(query) - {"starttls"} or any(len(v) != 1 for v in query.values()):
        raise InvalidInput(f"the only query parameter is starttls=true: {_SMTP_FORMS}",
                           field="smtp_url")
    starttls = query.get("starttls", ["false"])[0].lower()
    if starttls not in ("true", "false"):
        raise InvalidInput("starttls must be true or false", field="smtp_url")
    if parts.scheme == "smtps" and starttls == "true":
        raise InvalidInput("smtps:// is TLS from the start; starttls=true goes with smtp://",
                           field="smtp_url")
    security: Literal["none", "starttls", "tls"] = (
        "tls" if parts.scheme == "smtps" else "starttls" if starttls == "true" else "none")
    username = unquote(parts.username) if parts.username else None
    password = SecretStr(unquote(parts.password)) if parts.password else None
    if (username is None) != (password is None):
        raise InvalidInput("give both USER and PASS, or neither", field="smtp_url")
    if username is not None and security == "none" and host not in _LOOPBACK:
        raise InvalidInput("a password would cross the network in clear: use smtps:// or "
                           "?starttls=true", field="smtp_url")
    address, header = parse_smtp_from(sender)
    return SmtpEndpoint(host=host, port=port or 0, security=security, username=username,
                        password=password, sender=address, sender_header=header,
                        ca_file=_ca_file(ca_file, "smtp_ca_file"))


def parse_sms_url(value: str, *, token: SecretStr | None = None,
                  ca_file: Path | None = None) -> WebhookSmsEndpoint | TwilioSmsEndpoint:
    parts, host, port = _host_port(value, "sms_url", _SMS_FORMS, port_required=False)
    netloc = host if ":" not in host else f"[{host}]"
    netloc += f":{port}" if port is not None else ""
    ca = _ca_file(ca_file, "sms_ca_file")
    if parts.scheme == "twilio":
        if token is not None:
            raise InvalidInput("a Twilio URL carries its own auth token", field="sms_token")
        if not parts.username or not _TWILIO_SID.fullmatch(unquote(parts.username)):
            raise InvalidInput(f"the account SID is missing: {_SMS_FORMS}", field="sms_url")
        if not parts.password:
            raise InvalidInput(f"the auth token is missing: {_SMS_FORMS}", field="sms_url")
        query = _query(parts)
        sender = query.get("from", [""])
        if set(query) - {"from"} or len(sender) != 1 or not E164.fullmatch(sender[0]):
            raise InvalidInput("?from= must be the sending number as +NUMBER (E.164), "
                               "e.g. ?from=+15550001111", field="sms_url")
        if parts.path not in ("", "/"):
            raise InvalidInput(f"a path is not allowed: {_SMS_FORMS}", field="sms_url")
        return TwilioSmsEndpoint(base_url=f"https://{netloc}",
                                 account_sid=unquote(parts.username),
                                 auth_token=SecretStr(unquote(parts.password)),
                                 sender=sender[0], ca_file=ca)
    if parts.scheme not in ("https", "http"):
        raise InvalidInput(f"scheme {parts.scheme!r} is not supported: {_SMS_FORMS}",
                           field="sms_url")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise InvalidInput("http:// is only for a gateway on this machine: use https://",
                           field="sms_url")
    userinfo = parts.password or parts.username
    if userinfo and token is not None:
        raise InvalidInput("the token is both in sms_url and in sms_token: keep one",
                           field="sms_token")
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return WebhookSmsEndpoint(url=url, ca_file=ca,
                              token=SecretStr(unquote(userinfo)) if userinfo else token)


def smtp_endpoint(settings: Settings) -> SmtpEndpoint | None:
    """The SMTP server `smtp_url` names, or None when it is not set."""
    if settings.smtp_url is None:
        for name in ("smtp_from", "smtp_ca_file"):
            if getattr(settings, name) is not None:
                raise InvalidInput(f"{name} is set but smtp_url is not", field=name)
        return None
    if settings.smtp_from is None:
        raise InvalidInput("smtp_url is set: set smtp_from too (the sender's address)",
                           field="smtp_from")
    return parse_smtp_url(settings.smtp_url.get_secret_value(), sender=settings.smtp_from,
                          ca_file=settings.smtp_ca_file)


def sms_endpoint(settings: Settings) -> WebhookSmsEndpoint | TwilioSmsEndpoint | None:
    """The SMS gateway `sms_url` names, or None when it is not set."""
    if settings.sms_url is None:
        for name in ("sms_token", "sms_ca_file"):
            if getattr(settings, name) is not None:
                raise InvalidInput(f"{name} is set but sms_url is not", field=name)
        return None
    return parse_sms_url(settings.sms_url.get_secret_value(), token=settings.sms_token,
                         ca_file=settings.sms_ca_file)




_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^(?P<d1>[A-Za-z]{3})(?:-(?P<d2>[A-Za-z]{3}))?\s+"
                       r"(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})$")


class BusinessHours(BaseModel):
    """`TENANTRY_BUSINESS_HOURS` ("Mon-Fri 08:00-18:00") in `TENANTRY_BUSINESS_TIMEZONE`.

    The NOC hears of hands-on platforms only within them; contacts kept to business hours
    too.
    """

    model_config = ConfigDict(frozen=True)
    first_day: int
    last_day: int
    start_minute: int
    end_minute: int
    timezone: str

    @classmethod
    def parse(cls, spec: str, timezone: str) -> BusinessHours:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        m = _HOURS_RE.fullmatch(spec.strip())
        bad = InvalidInput("business_hours must look like 'Mon-Fri 08:00-18:00'",
                           field="business_hours")
        if m is None:
            raise bad
        d1, d2 = m["d1"].lower(), (m["d2"] or m["d1"]).lower()
        if d1 not in _DAYS or d2 not in _DAYS:
            raise bad
        h1, m1, h2, m2 = (int(m[k]) for k in ("h1", "m1", "h2", "m2"))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise bad
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            raise InvalidInput("business_hours must end after they start",
                               field="business_hours")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"business_timezone {timezone!r} is not a known time zone "
                               "(like Europe/Zurich)", field="business_timezone") from None
        return cls(first_day=_DAYS.index(d1), last_day=_DAYS.index(d2), start_minute=start,
                   end_minute=end, timezone=timezone)

    def contains(self, when: datetime) -> bool:
        from zoneinfo import ZoneInfo

        local = when.astimezone(ZoneInfo(self.timezone))
        day = local.weekday()
        in_days = (self.first_day <= day <= self.last_day if self.first_day <= self.last_day
                   else day >= self.first_day or day <= self.last_day)
        minute = local.hour * 60 + local.minute
        return in_days and self.start_minute <= minute < self.end_minute


def business_hours(settings: Settings) -> BusinessHours:
    return BusinessHours.parse(settings.business_hours, settings.business_timezone)
