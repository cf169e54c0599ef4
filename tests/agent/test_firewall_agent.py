"""A real agent keeps its host's firewall: started with `--firewall` (inside a network
namespace standing in for the host, so the test machine itself is never firewalled) it
lets the ingress port and SSH in and drops any other port, puts the table back when it is
removed or changed behind its back, and leaves it in place when it stops."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Callable

import pytest

from tenantry.agent.firewall import CHECK_PERIOD
from tests.agent.test_firewall import (
    assert_dropped,
    joined_namespace,
    listening,
    nft_in,
    probe,
)
from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    free_port,
    port_block,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_agent_applies_and_keeps_its_firewall(plane: ControlPlaneProcess) -> None:
    root = short_tmp("tnf-")
    ingress, ssh, other = free_port(), free_port(), free_port()
    try:
        with joined_namespace() as (ns, address), listening(ns, ingress, ssh, other):
            # before the agent, every port answers: what is dropped later, the agent dropped
            assert [probe(address, p) for p in (ingress, ssh, other)] == ["ok"] * 3
            token = plane.cli_json("host", "enroll-token")["token"]
            with (root / "agent.log").open("wb") as log_file:
                agent = subprocess.Popen(
                    [*TENANTRY, "agent", "--data-dir", str(root / "agent"),
                     "--server", plane.url, "--region", "fenced", "--name", f"fw-{ns[-6:]}",
                     "--ingress-port", str(ingress), "--ssh-port", str(ssh),
                     "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit",
                     "--firewall", "--firewall-netns", ns],
                    env={**plane.env, "TENANTRY_ENROLL_TOKEN": token},
                    stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True)
            try:  # the agent stops before the listeners and the namespace go
                _check_agent(agent, ns, address, (ingress, ssh, other),
                             (root / "agent.log").read_text)

                def reported() -> str:
                    return next(str(h["firewall"]) for h in plane.cli_json("host", "list")
                                if h["name"] == f"fw-{ns[-6:]}")

                wait_until(lambda: reported() == "in place", 30, "the firewall in host list")
            finally:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        agent.wait(60)
                    if agent.poll() is None:
                        agent.kill()
                        agent.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_agent(agent: subprocess.Popen[bytes], ns: str, address: str,
                 ports: tuple[int, int, int], agent_log: Callable[[], str]) -> None:
    ingress, ssh, other = ports

    def table() -> str | None:
        listed = nft_in(ns, "list", "table", "inet", "tenantry")
        return listed.stdout if listed.returncode == 0 else None

    wait_until(lambda: table() is not None, 60, "the agent to apply its table")
    assert f"tcp dport {{ {min(ingress, ssh)}, {max(ingress, ssh)} }}" in str(table())
    assert probe(address, ingress) == "ok"
    assert probe(address, ssh) == "ok"
    assert_dropped(address, other)
    assert probe("127.0.0.1", other, ns) == "ok", "loopback is never filtered"

    assert nft_in(ns, "delete", "table", "inet", "tenantry").returncode == 0
    assert probe(address, other) == "ok", "open while the table is gone"
    took = wait_until(lambda: table() is not None, 4 * CHECK_PERIOD,
                      "the agent to restore the removed table")
    print(f"removed table restored by the agent after {took:.1f} s")
    assert_dropped(address, other)

    assert nft_in(ns, "insert", "rule", "inet", "tenantry", "input", "tcp", "dport",
                  str(other), "accept").returncode == 0
    assert probe(address, other) == "ok", "the altered table lets it in"
    took = wait_until(lambda: f"dport {other}" not in str(table()), 4 * CHECK_PERIOD,
                      "the agent to undo the change to its table")
    print(f"altered table restored by the agent after {took:.1f} s")
    assert_dropped(address, other)
    assert probe(address, ingress) == "ok"

    log = agent_log()
    assert "table inet tenantry was removed outside tenantry; restoring it" in log
    assert "table inet tenantry was changed outside tenantry; restoring it" in log
    assert "cannot apply" not in log

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    assert table() is not None, "a stopping agent leaves the host firewalled"
    assert_dropped(address, other)
