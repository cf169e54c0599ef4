"""The agent's probes of its platforms (agent/prober.py) against a real TLS server on loopback
that plays the ingress: kept connections shared by the platforms, the pinned certificate,
hangs, timing after the scrapes, and what is reported when."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tenantry.agent.prober import Prober, ProbeTarget

NAME = "p1.acme.localhost"


def _cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    return cert, key


class Ingress:
    """HTTPS/1.1 with keep-alive, one certificate whatever the name; counts connections,
    notes each one's SNI and each request's arrival."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.status = 200
        self.hang = threading.Event()  # set: requests get no answer
        self.drop = False  # close each connection after its answer, unannounced
        self.connections = 0
        self.names: list[str] = []  # the SNI of each TLS handshake
        self.arrivals: list[tuple[float, str, str]] = []  # (monotonic, Host, path)
        self.open: list[socket.socket] = []
        outer = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)

        def sni(_obj: Any, name: str | None, _ctx: Any) -> None:
            outer.names.append(name or "")

        ctx.sni_callback = sni

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                outer.connections += 1
                outer.open.append(self.request)
                super().setup()

            def do_GET(self) -> None:  # noqa: N802
                outer.arrivals.append((time.monotonic(), self.headers.get("Host", ""),
                                       self.path))
                if outer.hang.is_set():
                    time.sleep(5)
                body = b"ok"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if outer.drop:  # as Caddy does to its idle connections on a new config
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.address = ("127.0.0.1", int(self.server.server_address[1]))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def load(self) -> None:
        """What a Caddy load does to the kept connections: closes every one."""
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {"right": _cert(tmp_path, NAME), "other": _cert(tmp_path, "other.localhost")}


@pytest.fixture
def ingress(certs: dict[str, tuple[Path, Path]]) -> Iterator[Ingress]:
    server = Ingress(*certs["right"])
    yield server
    server.close()


def _target(cert: Path, path: str = "/health", name: str = "p1") -> ProbeTarget:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    hostname = NAME if name == "p1" else f"{name}.acme.localhost"
    return ProbeTarget(platform_id=name, isv="acme", platform=f"acme/{name}",
                       hostname=hostname, path=path, cert_der=c.public_bytes(Encoding.DER),
                       not_after=c.not_valid_after_utc.timestamp())


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober(interval=0.6, timeout=0.3, spread=0.2, stale=1.5, idle_after=2.0)
    yield p
    p.close()


def _samples(prober: Prober) -> dict[str, list[float]]:
    return {f.name: [v for _, v in f.samples] for f in prober.families()}


def _scrape_until(prober: Prober, pred: Callable[[], bool], timeout: float = 10) -> None:
    """Scrape every interval, as Prometheus would, until `pred`."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, _samples(prober)
        prober.scraped()
        time.sleep(prober.interval)


def test_one_kept_connection_answers_many_probes(ingress: Ingress, prober: Prober,
                                                 certs: dict[str, tuple[Path, Path]]) -> None:
    prober.use(ingress.address, [_target(certs["right"][0], "/ready?x=1")])
    _scrape_until(prober, lambda: len(ingress.arrivals) >= 5)
    assert ingress.connections == 1  # one TLS handshake for all of them
    assert {(host, path) for _, host, path in ingress.arrivals} == {(NAME, "/ready?x=1")}
    got = _samples(prober)
    assert got["tenantry_probe_success"] == [1.0]
    assert 0 < got["tenantry_probe_duration_seconds"][0] < 0.3
    expiry = got["tenantry_probe_cert_expiry_timestamp_seconds"][0]
    assert time.time() + 86400 < expiry < time.time() + 3 * 86400


def test_a_hang_an_error_status_and_a_wrong_certificate_each_fail(
        ingress: Ingress, prober: Prober, certs: dict[str, tuple[Path, Path]]) -> None:
    prober.use(ingress.address, [_target(certs["right"][0])])
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [1.0])

    ingress.hang.set()
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [0.0])
    assert "within 0.3 s" in prober.results()["p1"].error
    assert _samples(prober)["tenantry_probe_duration_seconds"] == []  # only for successes
    ingress.hang.clear()
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [1.0])

    ingress.status = 503
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [0.0])
    assert prober.results()["p1"].error == "HTTP 503"
    ingress.status = 200
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [1.0])

    # Caddy serving some other certificate under the name is a failure, whatever answers.
    prober.use(ingress.address, [_target(certs["other"][0])])
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [0.0])
    assert "another certificate" in prober.results()["p1"].error


def test_a_platform_is_reported_once_it_answered_or_was_armed(
        prober: Prober, certs: dict[str, tuple[Path, Path]]) -> None:
    with socket.socket() as closed:  # a port nobody listens on: a platform not up yet
        closed.bind(("127.0.0.1", 0))
        address = ("127.0.0.1", closed.getsockname()[1])
    prober.use(address, [_target(certs["right"][0])])
    _scrape_until(prober, lambda: "p1" in prober.results())
    for _ in range(3):
        prober.scraped()
        time.sleep(prober.interval)
    assert not prober.results()["p1"].ok
    assert _samples(prober)["tenantry_probe_success"] == []  # being made: no alert
    assert prober.unarmed() == {"p1"}
    prober.arm("p1")  # its app has run a while (monitor.py): now it must answer
    assert _samples(prober)["tenantry_probe_success"] == [0.0]
    assert prober.unarmed() == set()


def test_probes_start_just_after_each_scrape(ingress: Ingress, prober: Prober,
                                            certs: dict[str, tuple[Path, Path]]) -> None:
    """So that one that hangs has timed out before the next scrape."""
    prober.use(ingress.address, [_target(certs["right"][0])])
    scrapes = []
    for _ in range(8):
        scrapes.append(time.monotonic())
        prober.scraped()
        time.sleep(prober.interval)
    late = [at for at, _, _ in ingress.arrivals if at > scrapes[2]]
    assert len(late) >= 4
    for at in late:
        since = at - max(s for s in scrapes if s <= at)
        assert since <= prober.spread + 0.1, (since, scrapes, late)


def test_nobody_scraping_pauses_the_probes(ingress: Ingress, prober: Prober,
                                           certs: dict[str, tuple[Path, Path]]) -> None:
    prober.use(ingress.address, [_target(certs["right"][0])])
    _scrape_until(prober, lambda: len(ingress.arrivals) >= 2)
    time.sleep(prober.idle_after + prober.interval)
    asked = len(ingress.arrivals)
    time.sleep(3 * prober.interval)
    assert len(ingress.arrivals) == asked
    # A scrape wakes them: fresh answers within an interval or two, and no stale 0 meanwhile.
    prober.scraped()
    assert _samples(prober)["tenantry_probe_success"] in ([], [1.0])
    _scrape_until(prober, lambda: len(ingress.arrivals) > asked)


def test_a_stuck_prober_tells_a_failure_not_the_last_success(
        ingress: Ingress, prober: Prober, certs: dict[str, tuple[Path, Path]]) -> None:
    prober.use(ingress.address, [_target(certs["right"][0])])
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [1.0])
    prober.close()  # its thread gone: results age while the scrapes go on
    _scrape_until(prober, lambda: _samples(prober)["tenantry_probe_success"] == [0.0])


def test_a_kept_connection_the_ingress_closed_is_asked_again_on_a_new_one(
        ingress: Ingress, prober: Prober, certs: dict[str, tuple[Path, Path]]) -> None:
    """Caddy closes its idle connections when it loads a new config (each new platform):
    that must not fail every platform's next probe."""
    ingress.drop = True
    prober.use(ingress.address, [_target(certs["right"][0])])
    seen = []
    for _ in range(12):
        prober.scraped()
        time.sleep(prober.interval)
        result = prober.results().get("p1")
        if result is not None:
            seen.append(result.ok)
    assert len(ingress.arrivals) >= 6 and ingress.connections == len(ingress.arrivals)
    assert seen and all(seen), [r for r in seen]


def test_platforms_share_kept_connections_so_a_load_costs_a_handful_of_handshakes(
        ingress: Ingress, prober: Prober, certs: dict[str, tuple[Path, Path]]) -> None:
    """Each new platform makes Caddy load its config, which closes every kept connection.
    With a connection per platform the next round made a handshake for each (at 300, about
    a CPU-second landing on the platform being made); shared, only the few in use at once."""
    targets = [_target(certs["right"][0], name=f"p{i}") for i in range(30)]
    hosts = {t.hostname for t in targets}
    prober.use(ingress.address, targets)

    def asked_each(times: int, since: int = 0) -> bool:
        hosts_asked = [host for _, host, _ in ingress.arrivals[since:]]
        return all(hosts_asked.count(h) >= times for h in hosts)

    _scrape_until(prober, lambda: asked_each(3))
    # each name's certificate checked once, on a connection opened under it; kept since
    assert sorted(ingress.names) == sorted(hosts)
    assert ingress.connections == len(hosts)
    assert all(r.ok for r in prober.results().values()), prober.results()

    for _ in range(2):
        before, asked = ingress.connections, len(ingress.arrivals)
        ingress.load()
        _scrape_until(prober, lambda: asked_each(2, since=asked))  # noqa: B023
        assert ingress.connections - before <= 10, ingress.connections - before
        assert all(r.ok for r in prober.results().values()), prober.results()


def test_each_name_is_pinned_again_on_its_own_connection_and_a_wrong_one_fails_alone(
        ingress: Ingress, certs: dict[str, tuple[Path, Path]]) -> None:
    prober = Prober(interval=0.6, timeout=0.3, spread=0.2, stale=1.5, idle_after=2.0,
                    pin_every=1.5)
    try:
        right = [_target(certs["right"][0], name=f"p{i}") for i in range(4)]
        wrong = _target(certs["other"][0], name="p9")  # Caddy serves another under its name
        prober.use(ingress.address, [*right, wrong])
        _scrape_until(prober, lambda: all(ingress.names.count(t.hostname) >= 3
                                          for t in right))
        results = prober.results()
        assert all(results[t.platform_id].ok for t in right), results
        assert not results["p9"].ok and "another certificate" in results["p9"].error
        # the failing name never got a kept connection to ask on in its stead
        assert not any(host == wrong.hostname for _, host, _ in ingress.arrivals)
    finally:
        prober.close()
