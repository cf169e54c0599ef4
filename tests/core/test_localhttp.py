"""Calls to local services (the monitoring programs, say) share one HTTP client per process:
a new client per call costs a TLS context (~35 ms of CPU). (The agent's look at each app
process does without a client at all: tests/agent/test_health_check.py.)"""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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


def test_calls_make_one_client_and_keep_no_connection_open(
        app_port: int, monkeypatch: pytest.MonkeyPatch,
        httpx_clients_made: list[httpx.Client]) -> None:
    monkeypatch.setattr(localhttp, "_client", None)

    def status(path: str) -> int:
        return localhttp.client().get(f"http://127.0.0.1:{app_port}{path}",
                                      timeout=2).status_code

    callers = [threading.Thread(target=lambda: [status("/health") for _ in range(10)])
               for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert (status("/health"), status("/sick")) == (200, 503)
    assert len(httpx_clients_made) == 1, "one client for every call, from every thread"
    pool = localhttp.client()._transport._pool
    assert pool.connections == [], "an app's server keeps no idle connection for us"
