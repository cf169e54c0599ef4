"""The host firewall: the rendered ruleset passes `nft -c`, and inside a network namespace
of our own it lets 443 and 22 in and nothing else."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tenantry.agent import firewall
from tenantry.core.errors import InvalidInput


def test_ruleset_passes_nft_check() -> None:
    text = firewall.render()
    firewall.check(text)
    assert "policy drop" in text
    assert "tcp dport { 22, 443 }" in text
    assert 'iif "lo" accept' in text
    assert "ct state established,related accept" in text


def test_ports_are_parameters() -> None:
    text = firewall.render(ingress_port=8443, ssh_port=2222)
    firewall.check(text)
    assert "tcp dport { 2222, 8443 }" in text
    with pytest.raises(InvalidInput):
        firewall.render(ingress_port=70000)
    with pytest.raises(InvalidInput):
        firewall.check("table inet tenantry { chain input { nonsense } }")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """A server and a client namespace joined by a veth pair, link-local addresses only."""
    tag = secrets.token_hex(3)
    server, client = f"tnt-fw-s-{tag}", f"tnt-fw-c-{tag}"
    made: list[str] = []
    try:
        for ns in (server, client):
            _ip("netns", "add", ns)
            made.append(ns)
        # created inside the server namespace, so the host's interfaces are never touched
        _ip("-n", server, "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c",
            "netns", client)
        _ip("-n", server, "addr", "add", "169.254.77.1/30", "dev", "veth-s")
        _ip("-n", client, "addr", "add", "169.254.77.2/30", "dev", "veth-c")
        for ns, dev in ((server, "veth-s"), (client, "veth-c")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield server, client
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


LISTENER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
for p in map(int, sys.argv[1:]):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        print(s.recv(2).decode())
except OSError as e:
    print(type(e).__name__)
"""


@pytest.mark.slow
def test_only_443_and_22_are_reachable(namespaces: tuple[str, str]) -> None:
    server, client = namespaces
    subprocess.run(firewall.apply_command(server), input=firewall.render(), text=True,
                   check=True, capture_output=True)
    listed = subprocess.run(["ip", "netns", "exec", server, "nft", "list", "ruleset"],
                            capture_output=True, text=True, check=True).stdout
    assert "policy drop" in listed
    listener = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", LISTENER,
                                 "443", "22", "8080"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"

        def probe(ns: str, host: str, port: int) -> str:
            return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE,
                                   host, str(port)], capture_output=True, text=True,
                                  check=True, timeout=20).stdout.strip()

        assert probe(client, "169.254.77.1", 443) == "ok"
        assert probe(client, "169.254.77.1", 22) == "ok"
        started = time.monotonic()
        assert probe(client, "169.254.77.1", 8080) in ("TimeoutError", "timeout")
        assert time.monotonic() - started >= 1.5, "dropped, not refused"
        # loopback inside the host is not filtered
        assert probe(server, "127.0.0.1", 8080) == "ok"
        # and applying again is idempotent (the table is replaced, not doubled)
        subprocess.run(firewall.apply_command(server), input=firewall.render(), text=True,
                       check=True, capture_output=True)
        again = subprocess.run(["ip", "netns", "exec", server, "nft", "list", "ruleset"],
                               capture_output=True, text=True, check=True).stdout
        assert again.count("chain input") == 1
    finally:
        listener.terminate()
        listener.wait(10)
