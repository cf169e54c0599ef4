"""Health probes and calls to the local monitoring share one HTTP client per process: a new
client per call costs a TLS context (~35 ms of CPU), most of an idle agent's CPU at a probe
per platform every few seconds."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tenantry.agent import converge
from tenantry.core import localhttp


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        code = 200 if self.path == "/health" else 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def app_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probes_make_one_client_and_keep_no_connection_open(
        app_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    init = httpx.Client.__init__

    def counting(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "__init__", counting)
    monkeypatch.setattr(localhttp, "_client", None)
    probes = [threading.Thread(target=lambda: [converge._healthy(app_port, "/health")
                                               for _ in range(10)]) for _ in range(4)]
    for t in probes:
        t.start()
    for t in probes:
        t.join()
    assert converge._healthy(app_port, "/health")
    assert not converge._healthy(app_port, "/sick")
    assert len(made) == 1, "one client for every probe, from every thread"
    pool = localhttp.client()._transport._pool
    assert pool.connections == [], "an app's server keeps no idle connection for us"
