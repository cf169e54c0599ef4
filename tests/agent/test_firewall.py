"""The host firewall: the rendered ruleset passes `nft -c`; inside a network namespace of
our own it lets 443 and 22 in and nothing else; `HostFirewall` repairs drift (facts in,
nft commands out, against a recording fake of nft) and never raises.

The namespace helpers here are shared with test_firewall_agent.py."""

from __future__ import annotations

import contextlib
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tenantry.agent import firewall
from tenantry.agent.firewall import HostFirewall
from tenantry.core.errors import InvalidInput
from tenantry.platforms.contract import FirewallReport
from tests.conftest import TENANTRY


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


# ------------------------------------------------------------ HostFirewall against a fake nft

@dataclass
class FakeNft:
    """nft as the agent uses it: check, load, list one table; tables kept per namespace."""

    tables: dict[str | None, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    missing: bool = False  # no nft binary
    refuse: bool = False  # the kernel rejects every ruleset

    def __call__(self, argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        if self.missing:
            raise FileNotFoundError(2, "No such file or directory", "nft")
        ns = argv[3] if argv[:3] == ["ip", "netns", "exec"] else None
        args = argv[4:] if ns else argv
        kind = {"-c": "check", "-f": "apply", "list": "list"}[args[1]]
        self.calls.append(kind)
        if kind == "list":
            if ns in self.tables:
                return subprocess.CompletedProcess(argv, 0, self.tables[ns], "")
            return subprocess.CompletedProcess(argv, 1, "", "Error: No such file or directory")
        if self.refuse:
            return subprocess.CompletedProcess(argv, 1, "", "Error: Could not process rule")
        if kind == "apply":
            assert stdin is not None
            self.tables[ns] = stdin.split("delete table inet tenantry\n", 1)[1]
        return subprocess.CompletedProcess(argv, 0, "", "")


APPLY = ["list", "check", "apply", "list"]


def _remove(fake: FakeNft, fw: HostFirewall) -> None:
    del fake.tables[fw.netns]


def _alter(fake: FakeNft, fw: HostFirewall) -> None:
    fake.tables[fw.netns] += "add rule inet tenantry input tcp dport 8080 accept\n"


def _move_ingress(fake: FakeNft, fw: HostFirewall) -> None:
    fw.ingress_port = 443


DRIFT: list[tuple[str, Callable[[FakeNft, HostFirewall], None], list[str], int, str]] = [
    ("untouched", lambda fake, fw: None, ["list"], 0, ""),
    ("removed", _remove, APPLY, 1, "was removed outside tenantry; restoring it"),
    ("altered", _alter, APPLY, 1, "was changed outside tenantry; restoring it"),
    ("ingress moved", _move_ingress, APPLY, 0, "ports changed to tcp 22, 443"),
]


@pytest.mark.parametrize(("netns", "case"), [(ns, c) for ns in (None, "tnt-x") for c in DRIFT],
                         ids=lambda v: v if isinstance(v, str) or v is None else v[0])
def test_drift_is_repaired(netns: str | None,
                           case: tuple[str, Callable[[FakeNft, HostFirewall], None],
                                       list[str], int, str],
                           caplog: pytest.LogCaptureFixture) -> None:
    _, change, calls, repairs, logged = case
    fake = FakeNft()
    fw = HostFirewall(ingress_port=8443, netns=netns, run=fake)
    fw.converge()
    assert fake.calls == APPLY
    assert "tcp dport { 22, 8443 }" in fake.tables[netns]
    change(fake, fw)
    fake.calls.clear()
    with caplog.at_level(logging.INFO, "tenantry.agent.firewall"):
        fw.converge()
    assert fake.calls == calls
    assert f"tcp dport {{ 22, {fw.ingress_port} }}" in fake.tables[netns]
    assert "8080" not in fake.tables[netns]
    assert fw.status() == FirewallReport(table="inet tenantry", tcp_ports=[22, fw.ingress_port],
                                         in_place=True, repairs=repairs, error=None)
    assert logged in caplog.text


@pytest.mark.parametrize(("fault", "error"), [
    ("missing", "nft is not installed (Debian package nftables)"),
    ("refuse", "nft rejected the ruleset: Error: Could not process rule"),
], ids=["no-nft", "kernel-refuses"])
def test_failures_are_reported_not_raised(fault: str, error: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNft(**{fault: True})
    fw = HostFirewall(ingress_port=443, run=fake)
    with caplog.at_level(logging.INFO, "tenantry.agent.firewall"):
        fw.converge()
        fw.converge()
    assert fw.status().error == error and fw.status().in_place is False
    assert caplog.text.count("cannot apply table inet tenantry") == 1, "said once, not per retry"
    setattr(fake, fault, False)
    with caplog.at_level(logging.INFO, "tenantry.agent.firewall"):
        fw.converge()
    assert fw.status().in_place is True and fw.status().error is None
    assert "in place again" in caplog.text


def test_keep_converges_until_stopped() -> None:
    fake = FakeNft()
    fw = HostFirewall(ingress_port=443, run=fake, period=0.01)
    stopping = threading.Event()
    keeper = threading.Thread(target=fw.keep, args=(stopping,))
    keeper.start()
    time.sleep(0.1)
    del fake.tables[None]
    time.sleep(0.1)
    stopping.set()
    keeper.join(5)
    assert not keeper.is_alive()
    assert fw.repairs == 1 and None in fake.tables, "repaired, and left in place on stop"


def test_firewall_netns_needs_firewall() -> None:
    done = subprocess.run([*TENANTRY, "agent", "--data-dir", "/nonexistent",
                           "--firewall-netns", "x"], capture_output=True, text=True)
    assert done.returncode == 2 and "--firewall-netns needs --firewall" in done.stderr


# ------------------------------------------------------------ real namespaces

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def nft_in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                          text=True, check=False)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """A server and a client namespace joined by a veth pair, link-local addresses only."""
    tag = secrets.token_hex(3)
    server, client = f"tnt-fw-s-{tag}", f"tnt-fw-c-{tag}"
    made: list[str] = []
    try:
        for ns in (server, client):
            ip("netns", "add", ns)
            made.append(ns)
        # created inside the server namespace, so the host's interfaces are never touched
        ip("-n", server, "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c",
           "netns", client)
        ip("-n", server, "addr", "add", "169.254.77.1/30", "dev", "veth-s")
        ip("-n", client, "addr", "add", "169.254.77.2/30", "dev", "veth-c")
        for ns, dev in ((server, "veth-s"), (client, "veth-c")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server, client
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


@contextlib.contextmanager
def joined_namespace() -> Iterator[tuple[str, str]]:
    """A namespace joined to this one by a veth pair; yields its name and its address.

    The pair gets a /30 of 169.254.0.0/16 (never routed off a link) that no interface here
    uses, away from 169.254.169.254; both ends and the namespace go on exit, even on failure.
    """
    tag = secrets.token_hex(3)
    ns, here, there = f"tnt-fw-{tag}", f"tfw{tag}h", f"tfw{tag}n"
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                          check=True).stdout
    subnet = next(f"169.254.{x}." for x in secrets.SystemRandom().sample(range(100, 160), 60)
                  if f"169.254.{x}." not in used)
    made_ns = made_link = False
    try:
        ip("netns", "add", ns)
        made_ns = True
        ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", ns)
        made_link = True
        ip("addr", "add", f"{subnet}1/30", "dev", here)
        ip("-n", ns, "addr", "add", f"{subnet}2/30", "dev", there)
        ip("link", "set", here, "up")
        ip("-n", ns, "link", "set", there, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, f"{subnet}2"
    finally:
        if made_link:
            subprocess.run(["ip", "link", "delete", here], capture_output=True, check=False)
        if made_ns:
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


@contextlib.contextmanager
def listening(ns: str, *ports: int) -> Iterator[None]:
    """TCP listeners inside `ns` that answer "ok"; stopped (by their pid) on exit."""
    listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER,
                                 *map(str, ports)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield
    finally:
        listener.terminate()
        try:
            listener.wait(10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait(10)


def probe(host: str, port: int, ns: str | None = None) -> str:
    """"ok", or the name of the error: TimeoutError when dropped, ConnectionRefusedError..."""
    argv = [sys.executable, "-c", PROBE, host, str(port)]
    return subprocess.run(firewall.in_netns(argv, ns), capture_output=True, text=True,
                          check=True, timeout=20).stdout.strip()


def assert_dropped(host: str, port: int, ns: str | None = None) -> None:
    started = time.monotonic()
    assert probe(host, port, ns) in ("TimeoutError", "timeout")
    assert time.monotonic() - started >= 1.5, "dropped, not refused"


@pytest.mark.slow
def test_only_443_and_22_are_reachable(namespaces: tuple[str, str]) -> None:
    server, client = namespaces
    subprocess.run(firewall.apply_command(server), input=firewall.render(), text=True,
                   check=True, capture_output=True)
    assert "policy drop" in nft_in(server, "list", "ruleset").stdout
    with listening(server, 443, 22, 8080):
        assert probe("169.254.77.1", 443, client) == "ok"
        assert probe("169.254.77.1", 22, client) == "ok"
        assert_dropped("169.254.77.1", 8080, client)
        # loopback inside the host is not filtered
        assert probe("127.0.0.1", 8080, server) == "ok"
        # and applying again is idempotent (the table is replaced, not doubled)
        subprocess.run(firewall.apply_command(server), input=firewall.render(), text=True,
                       check=True, capture_output=True)
        assert nft_in(server, "list", "ruleset").stdout.count("chain input") == 1


@pytest.mark.slow
def test_host_firewall_repairs_a_real_table() -> None:
    """HostFirewall with the real nft, in a namespace: removed and altered tables return."""
    with joined_namespace() as (ns, _):
        fw = HostFirewall(ingress_port=8443, ssh_port=2222, netns=ns)
        fw.converge()
        assert fw.status().in_place, fw.status()
        assert "tcp dport { 2222, 8443 }" in nft_in(ns, "list", "table", "inet", "tenantry").stdout
        assert nft_in(ns, "delete", "table", "inet", "tenantry").returncode == 0
        fw.converge()
        assert nft_in(ns, "add", "rule", "inet", "tenantry", "input", "tcp", "dport", "8080",
                      "accept").returncode == 0
        fw.converge()
        listed = nft_in(ns, "list", "table", "inet", "tenantry").stdout
        assert "8080" not in listed and "tcp dport { 2222, 8443 }" in listed
        assert fw.status() == FirewallReport(table="inet tenantry", tcp_ports=[2222, 8443],
                                             in_place=True, repairs=2, error=None)


@pytest.mark.parametrize(("reported", "shown"), [
    (None, "off"),
    (FirewallReport(table="inet tenantry", tcp_ports=[22], in_place=True), "in place"),
    (FirewallReport(table="inet tenantry", tcp_ports=[22], in_place=False), "applying"),
    (FirewallReport(table="inet tenantry", tcp_ports=[22], in_place=False,
                    error="nft: not found"), "error: nft: not found"),
])
def test_host_list_shows_the_reported_firewall(reported: FirewallReport | None,
                                               shown: str) -> None:
    from tenantry.platforms.hosts import firewall_state
    assert firewall_state(reported) == shown
