"""Real servers on loopback for the channels' tests: SMTP (aiosmtpd), an HTTP(S) gateway, a
port that refuses, and one that accepts connections but never answers.

Each is a context manager that stops its server on the way out, failure or not.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tenantry.core.ca import CertificateAuthority
from tests.conftest import free_port


@dataclass
class Certs:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certs(directory: Path) -> Certs:
    """A private CA (cryptography, through tenantry's own) and a cert for 127.0.0.1."""
    ca = CertificateAuthority.load_or_create(directory)
    issued = ca.issue_server_cert(["127.0.0.1", "localhost"])
    cert_file, key_file = directory / "server.pem", directory / "server-key.pem"
    cert_file.write_text(issued.cert_pem)
    key_file.write_text(issued.key_pem)
    return Certs(directory / "ca.pem", cert_file, key_file)


# ---------------------------------------------------------------- SMTP

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: bytes | None
    tls: bool


@dataclass
class Mailbox:
    """aiosmtpd handler: keeps what it accepts; `rcpt_reply` refuses every recipient,
    `data_reply` every message; `drop_on_quit` hangs up instead of answering QUIT."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    drop_on_quit: bool = False
    messages: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or b""
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        # session.ssl is set by STARTTLS only; SMTPS shows on the transport.
        tls = server.transport is not None and (
            server.transport.get_extra_info("ssl_object") is not None)
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                      content, login, tls))
        return "250 2.0.0 accepted"

    async def handle_QUIT(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        if self.drop_on_quit and server.transport is not None:
            server.transport.abort()
        return "221 bye"


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox


def _authenticator(login: str, password: str) -> Any:
    def check(server: SMTPServer, session: Session, envelope: Envelope, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == login.encode()
              and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
    return check


@contextmanager
def smtp_server(*, mailbox: Mailbox | None = None, rcpt_reply: str | None = None,
                certs: Certs | None = None, implicit_tls: bool = False,
                login: tuple[str, str] | None = None,
                port: int | None = None) -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1: plain, STARTTLS (`certs`) or SMTPS (`implicit_tls`); with
    `login`, AUTH is required (over TLS) before any mail."""
    mailbox = mailbox or Mailbox(rcpt_reply)
    port = port or free_port()
    kwargs: dict[str, Any] = {}
    if certs is not None and implicit_tls:
        kwargs["ssl_context"] = certs.server_context()
    elif certs is not None:
        kwargs.update(tls_context=certs.server_context(), require_starttls=True)
    if login is not None:
        kwargs.update(authenticator=_authenticator(*login), auth_required=True,
                      auth_require_tls=certs is not None and not implicit_tls)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port, mailbox)
    finally:
        controller.stop()


# ---------------------------------------------------------------- HTTP

@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class Gateway:
    """What the gateway saw, and what it answers next (`statuses`, then 200)."""

    url: str
    authorization: str | None
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextmanager
def http_gateway(*, certs: Certs | None = None,
                 authorization: str | None = None) -> Iterator[Gateway]:
    """A threaded HTTP(S) server on 127.0.0.1 that records each POST and answers 401 when
    the Authorization header is not `authorization`, else the next of `statuses`."""
    gateway = Gateway("", authorization)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            gateway.requests.append(Request(self.path, dict(self.headers.items()), body))
            if (gateway.authorization is not None
                    and self.headers.get("Authorization") != gateway.authorization):
                status = 401
            else:
                status = gateway.statuses.pop(0) if gateway.statuses else 201
            answer = json.dumps({"sid": "SM1", "status": "queued"} if status < 300 else
                                {"code": 21211, "message": f"status {status}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if certs is not None:
        server.socket = certs.server_context().wrap_socket(server.socket, server_side=True)
        scheme = "https"
    gateway.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- faults

@contextmanager
def refusing_port() -> Iterator[int]:
    """A port nothing listens on: connections are refused."""
    yield free_port()


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
