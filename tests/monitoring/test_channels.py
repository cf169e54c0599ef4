"""Notification channels: their settings (table-driven), their secrets, and each adapter
against a real server on loopback that accepts, refuses, is down or is slow."""

from __future__ import annotations

import logging
import os
import subprocess
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import SecretStr, ValidationError

from tenantry.core.config import Settings, load_settings
from tenantry.core.errors import InvalidInput
from tenantry.core.notify import (
    SmtpEndpoint,
    TwilioSmsEndpoint,
    WebhookSmsEndpoint,
    parse_sms_url,
    parse_smtp_url,
)
from tenantry.monitoring.channels import (
    Channel,
    DeliveryFailed,
    EmailChannel,
    Message,
    RecordingChannel,
    TwilioSmsChannel,
    WebhookSmsChannel,
    open_channels,
)
from tests.conftest import TENANTRY
from tests.monitoring.servers import (
    Certs,
    Mailbox,
    basic,
    http_gateway,
    make_certs,
    refusing_port,
    silent_port,
    smtp_server,
)

PASSWORD = "s3cr&t:p@ss/wd"  # noqa: S105 (a test secret: every character a URL must quote)
TOKEN = "tok-9f8e7d6c5b4a"  # noqa: S105
SID = "AC0123456789abcdef"
FROM = "+15550001111"


def message(to: str = "ops@example.com", key: str = "alert:42:overloaded:ops:email") -> Message:
    return Message(to=to, subject="CPU overloaded on host-1", body="load 9.5 > 8", dedup_key=key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def smtp_channel(port: int, *, url: str | None = None, certs: Certs | None = None,
                 timeout: float = 5.0) -> EmailChannel:
    endpoint = parse_smtp_url(url or f"smtp://127.0.0.1:{port}", sender="NOC <noc@example.com>",
                              ca_file=certs.ca_file if certs else None)
    return EmailChannel(endpoint, timeout=timeout)


def failure(channel: Channel, msg: Message | None = None) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(msg or message())
    return caught.value


# ---------------------------------------------------------------- settings

SMTP_GOOD = [
    ("smtp://127.0.0.1:25", "127.0.0.1", 25, "none", None, None),
    ("smtp://mail.example.com:587?starttls=true", "mail.example.com", 587, "starttls", None,
     None),
    (f"smtp://noc:{quote(PASSWORD, safe='')}@mail.example.com:587?starttls=true",
     "mail.example.com", 587, "starttls", "noc", PASSWORD),
    ("smtps://noc%40example.com:pw@mail.example.com:465", "mail.example.com", 465, "tls",
     "noc@example.com", "pw"),
    ("smtp://u:p@localhost:2525", "localhost", 2525, "none", "u", "p"),  # loopback: clear ok
    ("smtp://[::1]:25?starttls=false", "::1", 25, "none", None, None),
]


@pytest.mark.parametrize(("url", "host", "port", "security", "user", "password"), SMTP_GOOD)
def test_good_smtp_urls(url: str, host: str, port: int, security: str, user: str | None,
                        password: str | None) -> None:
    e = parse_smtp_url(url, sender="noc@example.com")
    assert (e.host, e.port, e.security, e.username) == (host, port, security, user)
    assert (e.password.get_secret_value() if e.password else None) == password


SMTP_BAD = [
    "mail.example.com:25",  # no scheme
    "not a url",
    "http://mail.example.com:25",
    "smtp://mail.example.com",  # no port
    "smtp://:25",  # no host
    "smtp://mail.example.com:99999",
    "smtp://mail.example.com:abc",
    "smtp://mail.example.com:25/relay",
    "smtp://mail.example.com:25#x",
    "smtps://mail.example.com:465?starttls=true",
    "smtp://mail.example.com:25?starttls=maybe",
    "smtp://mail.example.com:25?tls=1",
    "smtp://u:p@mail.example.com:25",  # a password in clear over the network
    "smtp://u@mail.example.com:587?starttls=true",  # a user without a password
]


@pytest.mark.parametrize("url", SMTP_BAD)
def test_bad_smtp_urls_name_smtp_url(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(smtp_url=url, smtp_from="noc@example.com")
    assert caught.value.field == "smtp_url"
    assert "[" not in caught.value.message  # the CLI prints messages as Rich markup


@pytest.mark.parametrize("sender", ["nobody", "a@", "@example.com", "a b@example.com",
                                    "NOC <noc@example.com>\r\nBcc: x@evil.test"])
def test_bad_smtp_from_names_smtp_from(sender: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(smtp_url="smtp://127.0.0.1:25", smtp_from=sender)
    assert caught.value.field == "smtp_from"


SMS_GOOD: list[tuple[str, type, str, str | None]] = [
    ("https://gw.example.com/sms", WebhookSmsEndpoint, "https://gw.example.com/sms", None),
    (f"https://{TOKEN}@gw.example.com:8443/send?x=1", WebhookSmsEndpoint,
     "https://gw.example.com:8443/send?x=1", TOKEN),
    (f"https://:{TOKEN}@gw.example.com", WebhookSmsEndpoint, "https://gw.example.com/", TOKEN),
    ("http://127.0.0.1:9000/sms", WebhookSmsEndpoint, "http://127.0.0.1:9000/sms", None),
    (f"twilio://{SID}:{TOKEN}@api.twilio.com?from={FROM}", TwilioSmsEndpoint,
     "https://api.twilio.com", TOKEN),
    (f"twilio://{SID}:{TOKEN}@127.0.0.1:8443?from=%2B15550001111", TwilioSmsEndpoint,
     "https://127.0.0.1:8443", TOKEN),
]


@pytest.mark.parametrize(("url", "kind", "base", "token"), SMS_GOOD)
def test_good_sms_urls(url: str, kind: type, base: str, token: str | None) -> None:
    e = parse_sms_url(url)
    assert type(e) is kind
    if isinstance(e, TwilioSmsEndpoint):
        assert (e.base_url, e.account_sid, e.sender) == (base, SID, FROM)
        assert e.auth_token.get_secret_value() == token
    else:
        assert isinstance(e, WebhookSmsEndpoint)
        assert e.url == base
        assert (e.token.get_secret_value() if e.token else None) == token


SMS_BAD = [
    "ftp://gw.example.com/sms",
    "gw.example.com/sms",
    "http://gw.example.com/sms",  # a token in clear over the network
    "https:///sms",
    "https://gw.example.com:8x/sms",
    f"twilio://api.twilio.com?from={FROM}",  # no account SID
    f"twilio://{SID}@api.twilio.com?from={FROM}",  # no auth token
    f"twilio://{SID}:{TOKEN}@api.twilio.com",  # no sender
    f"twilio://{SID}:{TOKEN}@api.twilio.com?from=5550001111",  # not E.164
    f"twilio://{SID}:{TOKEN}@api.twilio.com?from=ops@example.com",
    f"twilio://{SID}:{TOKEN}@api.twilio.com?from={FROM}&to=x",
    f"twilio://{SID}:{TOKEN}@api.twilio.com/2010-04-01?from={FROM}",
    f"twilio://{SID}:{TOKEN}@?from={FROM}",  # no host
]


@pytest.mark.parametrize("url", SMS_BAD)
def test_bad_sms_urls_name_sms_url(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(sms_url=url)
    assert caught.value.field == "sms_url"
    assert TOKEN not in caught.value.message and "[" not in caught.value.message  # Rich


@pytest.mark.parametrize(("overrides", "field"), [
    ({"smtp_url": "smtp://127.0.0.1:25"}, "smtp_from"),
    ({"smtp_from": "noc@example.com"}, "smtp_from"),
    ({"smtp_ca_file": "/etc/hostname"}, "smtp_ca_file"),
    ({"smtp_url": "smtps://127.0.0.1:465", "smtp_from": "noc@example.com",
      "smtp_ca_file": "/nonexistent/ca.pem"}, "smtp_ca_file"),
    ({"sms_token": TOKEN}, "sms_token"),
    ({"sms_url": f"https://{TOKEN}@gw.example.com/sms", "sms_token": TOKEN}, "sms_token"),
    ({"sms_url": f"twilio://{SID}:{TOKEN}@api.twilio.com?from={FROM}", "sms_token": TOKEN},
     "sms_token"),
    ({"sms_url": "https://gw.example.com/sms", "sms_ca_file": "/nonexistent"}, "sms_ca_file"),
])
def test_inconsistent_channel_settings_name_the_field(overrides: dict[str, str],
                                                      field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_settings(**overrides)
    assert caught.value.field == field


def test_channel_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTRY_SMTP_URL", "smtps://noc:pw@mail.example.com:465")
    monkeypatch.setenv("TENANTRY_SMTP_FROM", "noc@example.com")
    monkeypatch.setenv("TENANTRY_SMS_URL", f"twilio://{SID}:{TOKEN}@api.twilio.com?from={FROM}")
    channels = open_channels(load_settings())
    assert isinstance(channels["email"], EmailChannel)
    assert isinstance(channels["sms"], TwilioSmsChannel)
    monkeypatch.setenv("TENANTRY_SMS_URL", "")  # empty is unset: nothing configured
    monkeypatch.setenv("TENANTRY_SMTP_URL", "")
    monkeypatch.setenv("TENANTRY_SMTP_FROM", "")
    assert open_channels(load_settings()) == {}


@pytest.mark.parametrize(("env", "field"), [
    ({"TENANTRY_SMTP_URL": f"smtp://noc:{quote(PASSWORD, safe='')}@mail.example.com",
      "TENANTRY_SMTP_FROM": "noc@example.com"}, "smtp_url"),
    ({"TENANTRY_SMS_URL": f"twilio://{SID}:{TOKEN}@api.twilio.com?from=555"}, "sms_url"),
])
def test_up_refuses_a_bad_channel_url_at_start(tmp_path: Path, env: dict[str, str],
                                               field: str) -> None:
    """The edge: `tenantry up` stops before starting anything, exit 2, the field named."""
    done = subprocess.run(
        [*TENANTRY, "up", "--listen", "127.0.0.1:0"], capture_output=True, text=True,
        timeout=60, env={**os.environ, "TENANTRY_DATA_DIR": str(tmp_path), **env})
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert f"({field})" in said and "Traceback" not in said
    assert PASSWORD not in said and quote(PASSWORD, safe="") not in said and TOKEN not in said


# ---------------------------------------------------------------- secrets

def test_secrets_stay_out_of_repr_str_and_errors() -> None:
    url = f"smtps://noc:{quote(PASSWORD, safe='')}@mail.example.com:465"
    sms = f"twilio://{SID}:{TOKEN}@api.twilio.com?from={FROM}"
    settings = load_settings(smtp_url=url, smtp_from="noc@example.com", sms_url=sms)
    shown = [repr(settings), str(settings), str(settings.model_dump()),
             *(repr(c) for c in open_channels(settings).values()),
             repr(parse_smtp_url(url)), repr(parse_sms_url(sms)),
             repr(parse_sms_url(f"https://{TOKEN}@gw.example.com/sms"))]
    for text in shown:
        for secret in (PASSWORD, quote(PASSWORD, safe=""), TOKEN):
            assert secret not in text, text
    # A bad URL with a password in it: the error names the field and not the password,
    # whether it comes through load_settings or Settings itself.
    bad = f"smtp://noc:{quote(PASSWORD, safe='')}@mail.example.com"  # no port
    for build in (lambda: load_settings(smtp_url=bad, smtp_from="noc@example.com"),
                  lambda: Settings(smtp_url=SecretStr(bad), smtp_from="noc@example.com")):
        with pytest.raises((InvalidInput, ValidationError)) as caught:
            build()
        assert isinstance(caught.value, InvalidInput)
        assert caught.value.field == "smtp_url"
        assert PASSWORD not in str(caught.value) and "p%40ss" not in str(caught.value)


# ---------------------------------------------------------------- the fake

def test_recording_channel_records_and_fails_as_told() -> None:
    fake = RecordingChannel("sms")
    fake.fail_next(DeliveryFailed("busy", retry=True))
    with pytest.raises(DeliveryFailed):
        fake.send(message("+15550002222"))
    fake.send(message("+15550002222"))
    assert [m.to for m in fake.attempts] == ["+15550002222"] * 2
    assert len(fake.sent) == 1


@pytest.mark.parametrize("fields", [
    {"to": "a@example.com\r\nBcc: x@evil.test"},
    {"subject": "CPU\nBcc: x@evil.test"},
    {"dedup_key": ""},
    {"dedup_key": "has space"},
])
def test_messages_refuse_header_injection_and_bad_keys(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Message(**{"to": "a@example.com", "subject": "s", "body": "b", "dedup_key": "k",
                   **fields})


# ---------------------------------------------------------------- email, real SMTP

def test_email_is_delivered_with_its_dedup_key() -> None:
    with smtp_server() as server:
        channel = smtp_channel(server.port)
        channel.send(message())
        channel.send(message())  # the outbox retrying after a lost answer: the same mail
        first, second = server.mailbox.messages
    assert first.mail_from == "noc@example.com" and first.rcpt_tos == ["ops@example.com"]
    mail = message_from_bytes(first.content, policy=email_policy)
    assert mail["Subject"] == "CPU overloaded on host-1"
    assert mail["From"] == "NOC <noc@example.com>"
    assert mail["X-Tenantry-Dedup-Key"] == "alert:42:overloaded:ops:email"
    assert "load 9.5 > 8" in mail.get_body().get_content()  # type: ignore[union-attr]
    resent = message_from_bytes(second.content, policy=email_policy)
    assert mail["Message-ID"] == resent["Message-ID"]  # readers show it once
    other = EmailChannel.compose(channel, message(key="alert:43:busy:ops:email"))
    assert other["Message-ID"] != mail["Message-ID"]


def test_email_over_starttls_with_auth(certs: Certs) -> None:
    secret = quote(PASSWORD, safe="")
    with smtp_server(certs=certs, login=("noc", PASSWORD)) as server:
        url = f"smtp://noc:{secret}@127.0.0.1:{server.port}?starttls=true"
        smtp_channel(server.port, url=url, certs=certs).send(message())
        [got] = server.mailbox.messages
    assert got.login == b"noc" and got.tls


# aiosmtpd counts only STARTTLS as TLS for AUTH; over SMTPS it is TLS from the first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_over_smtps_with_auth(certs: Certs) -> None:
    with smtp_server(certs=certs, implicit_tls=True, login=("noc", PASSWORD)) as server:
        url = f"smtps://noc:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
        smtp_channel(server.port, url=url, certs=certs).send(message())
        [got] = server.mailbox.messages
    assert got.login == b"noc" and got.tls


def test_a_wrong_password_is_retried_and_never_shown(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Wr0ng&" + PASSWORD
    caplog.set_level(logging.DEBUG)
    with smtp_server(certs=certs, login=("noc", PASSWORD)) as server:
        url = f"smtp://noc:{quote(wrong, safe='')}@127.0.0.1:{server.port}?starttls=true"
        failed = failure(smtp_channel(server.port, url=url, certs=certs))
        assert server.mailbox.messages == []
    assert failed.retry  # the operator fixes TENANTRY_SMTP_URL; what waited then goes out
    assert failed.field == "smtp_url" and "535" in failed.message
    shown = f"{failed} {failed.message} {failed!r} {caplog.text}"
    for secret in (wrong, quote(wrong, safe=""), PASSWORD):
        assert secret not in shown


def test_an_untrusted_certificate_is_retried(certs: Certs) -> None:
    with smtp_server(certs=certs, implicit_tls=True) as server:
        failed = failure(smtp_channel(server.port, url=f"smtps://127.0.0.1:{server.port}"))
        assert server.mailbox.messages == []
    assert failed.retry and "CERTIFICATE_VERIFY_FAILED" in failed.message


def test_a_recipient_refused_for_good_is_not_retried() -> None:
    with smtp_server(rcpt_reply="550 5.1.1 no such user") as server:
        failed = failure(smtp_channel(server.port))
    assert not failed.retry and failed.field == "to"
    assert "550" in failed.message and "ops@example.com" in failed.message


def test_a_recipient_refused_for_now_is_retried() -> None:
    with smtp_server(rcpt_reply="451 4.3.0 try again later") as server:
        failed = failure(smtp_channel(server.port))
    assert failed.retry and "451" in failed.message


@pytest.mark.parametrize(("reply", "retry"), [("554 5.7.1 rejected as spam", False),
                                              ("452 4.3.1 insufficient storage", True)])
def test_a_refused_message_is_retried_only_when_the_refusal_is_temporary(
        reply: str, retry: bool) -> None:
    with smtp_server(mailbox=Mailbox(data_reply=reply)) as server:
        failed = failure(smtp_channel(server.port))
    assert failed.retry is retry and reply[:3] in failed.message


def test_accepted_is_final_even_when_the_server_hangs_up_on_quit() -> None:
    # A retry here would deliver the message twice.
    with smtp_server(mailbox=Mailbox(drop_on_quit=True)) as server:
        smtp_channel(server.port).send(message())
        assert len(server.mailbox.messages) == 1


def test_an_smtp_server_that_is_down_is_retried() -> None:
    with refusing_port() as port:
        failed = failure(smtp_channel(port))
    assert failed.retry and failed.field == "smtp_url"
    assert "ConnectionRefusedError" in failed.message


def test_a_slow_smtp_server_times_out_and_is_retried() -> None:
    with silent_port() as port:
        failed = failure(smtp_channel(port, timeout=0.5))
    assert failed.retry and "timed out" in failed.message


def test_a_bad_email_address_is_not_retried() -> None:
    failed = failure(smtp_channel(1), message(to="+15550002222"))
    assert not failed.retry and failed.field == "to"


# ---------------------------------------------------------------- SMS, real HTTP

def webhook(url: str, certs: Certs | None, *, timeout: float = 5.0,
            token: str | None = TOKEN) -> WebhookSmsChannel:
    endpoint = parse_sms_url(url, token=SecretStr(token) if token else None,
                             ca_file=certs.ca_file if certs else None)
    assert isinstance(endpoint, WebhookSmsEndpoint)
    return WebhookSmsChannel(endpoint, timeout=timeout)


def twilio(base: str, certs: Certs | None, *, token: str = TOKEN,
           timeout: float = 5.0) -> TwilioSmsChannel:
    hostport = base.removeprefix("https://")
    endpoint = parse_sms_url(f"twilio://{SID}:{token}@{hostport}?from={FROM}",
                             ca_file=certs.ca_file if certs else None)
    assert isinstance(endpoint, TwilioSmsEndpoint)
    return TwilioSmsChannel(endpoint, timeout=timeout)


def test_webhook_sms_posts_json_with_the_bearer_token(certs: Certs) -> None:
    with http_gateway(certs=certs, authorization=f"Bearer {TOKEN}") as gw:
        webhook(f"{gw.url}/v1/sms", certs).send(message("+15550002222"))
        [request] = gw.requests
    assert request.path == "/v1/sms"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {"to": "+15550002222", "body": "load 9.5 > 8"}
    assert request.headers["Idempotency-Key"] == "alert:42:overloaded:ops:email"


def test_a_webhook_url_with_a_key_in_path_and_query_is_not_shown(certs: Certs) -> None:
    with http_gateway(certs=certs) as gw:
        channel = webhook(f"{gw.url}/hooks/k3y-in-path?api_key=k3y-in-query", certs,
                          token=None)
        gw.statuses.append(500)
        failed = failure(channel, message("+15550002222"))
        assert gw.requests[0].path == "/hooks/k3y-in-path?api_key=k3y-in-query"
    for text in (str(failed), repr(channel)):
        assert "k3y" not in text and gw.url in text


def test_webhook_sms_token_from_the_url_userinfo() -> None:
    with http_gateway(authorization=f"Bearer {TOKEN}") as gw:
        url = gw.url.replace("http://", f"http://{TOKEN}@") + "/sms"
        webhook(url, None, token=None).send(message("+15550002222"))
        assert len(gw.requests) == 1


def test_twilio_sms_posts_the_form_with_basic_auth(certs: Certs) -> None:
    with http_gateway(certs=certs, authorization=basic(SID, TOKEN)) as gw:
        twilio(gw.url, certs).send(message("+15550002222"))
        [request] = gw.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form() == {"To": ["+15550002222"], "From": [FROM], "Body": ["load 9.5 > 8"]}


@pytest.mark.parametrize(("status", "retry"), [(500, True), (503, True), (429, True),
                                               (400, False), (404, False), (422, False)])
def test_gateway_answers_decide_the_retry(certs: Certs, status: int, retry: bool) -> None:
    with http_gateway(certs=certs, authorization=basic(SID, TOKEN)) as gw:
        gw.statuses.append(status)
        failed = failure(twilio(gw.url, certs), message("+15550002222"))
    assert failed.retry is retry and str(status) in failed.message
    with http_gateway(certs=certs, authorization=f"Bearer {TOKEN}") as gw:
        gw.statuses.append(status)
        failed = failure(webhook(f"{gw.url}/sms", certs), message("+15550002222"))
    assert failed.retry is retry and failed.field == "sms_url"


def test_a_wrong_twilio_token_is_retried_and_never_shown(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + TOKEN
    with http_gateway(certs=certs, authorization=basic(SID, TOKEN)) as gw:
        channel = twilio(gw.url, certs, token=wrong)
        failed = failure(channel, message("+15550002222"))
    assert failed.retry and "401" in failed.message
    for text in (str(failed), repr(failed), repr(channel), caplog.text):
        assert wrong not in text and TOKEN not in text


def test_an_sms_gateway_that_is_down_is_retried(certs: Certs) -> None:
    with refusing_port() as port:
        failed = failure(webhook(f"https://127.0.0.1:{port}/sms", certs),
                         message("+15550002222"))
    assert failed.retry and "unreachable" in failed.message


def test_a_slow_sms_gateway_times_out_and_is_retried(certs: Certs) -> None:
    with silent_port() as port:
        failed = failure(twilio(f"https://127.0.0.1:{port}", certs, timeout=0.5),
                         message("+15550002222"))
    assert failed.retry and "did not answer in time" in failed.message


def test_an_untrusted_gateway_certificate_is_retried(certs: Certs) -> None:
    with http_gateway(certs=certs) as gw:
        failed = failure(webhook(f"{gw.url}/sms", None), message("+15550002222"))
    assert failed.retry and "CERTIFICATE_VERIFY_FAILED" in failed.message


def test_a_bad_phone_number_is_not_retried(certs: Certs) -> None:
    failed = failure(webhook("https://127.0.0.1:1/sms", certs), message("ops@example.com"))
    assert not failed.retry and failed.field == "to"


def test_endpoint_types_are_what_the_settings_hold() -> None:
    settings = load_settings(smtp_url="smtp://127.0.0.1:25", smtp_from="noc@example.com")
    [channel] = open_channels(settings).values()
    assert isinstance(channel, EmailChannel) and isinstance(channel.endpoint, SmtpEndpoint)
