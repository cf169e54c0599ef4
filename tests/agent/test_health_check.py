"""The agent's own look at each app process: GET of the health path on its port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tenantry.agent import converge


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        App.paths.append(self.path)
        if self.path.startswith("/slow"):
            time.sleep(3)
        status = 200 if self.path.startswith(("/health", "/slow")) else 503
        body = b"ok"
        with contextlib.suppress(ConnectionError):  # the look gave up on a slow answer
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def app() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_a_200_is_healthy_and_anything_else_is_not(
        app: int, httpx_clients_made: list[httpx.Client]) -> None:
    assert converge._healthy(app, "/health?from=agent")
    assert App.paths[-1] == "/health?from=agent"  # the path went as it is
    assert not converge._healthy(app, "/broken")
    assert httpx_clients_made == [], "no HTTP client: its own work cost more than the app's answer"


def test_an_app_too_slow_to_answer_is_not_healthy_and_the_look_is_bounded(app: int) -> None:
    started = time.monotonic()
    assert not converge._healthy(app, "/slow")
    assert time.monotonic() - started < converge.HEALTH_TIMEOUT + 0.5


def test_a_port_nobody_listens_on_or_that_hangs_up_is_not_healthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert not converge._healthy(free, "/health")  # refused

    def hang_up(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.close()  # no answer at all

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=hang_up, args=(listener,), daemon=True).start()
        assert not converge._healthy(listener.getsockname()[1], "/health")


def test_a_status_line_split_over_two_packets_is_read_whole() -> None:
    def answer(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 2")
            time.sleep(0.1)
            conn.sendall(b"00 OK\r\nContent-Length: 0\r\n\r\n")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=answer, args=(listener,), daemon=True).start()
        assert converge._healthy(listener.getsockname()[1], "/health")
