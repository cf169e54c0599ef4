"""How the agent's end leaves its host's platforms. With --stop-services-on-exit (as `up` runs
it) a stop that was asked for stops every platform; an agent that ends on an error (a bug)
leaves them running under their supervisord, for the next agent to adopt. On a host of 150
platforms an agent's crash once stopped all 1,413 of their processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.agent.main import Agent, AgentOptions
from tenantry.agent.testing import FakeServiceManager
from tests.conftest import alive, wait_until

# The stand-in for supervisord and a platform's program under it: a process and its child.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


class Daemon(FakeServiceManager):
    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid

    def daemon_pid(self) -> int | None:
        return self.pid if alive(self.pid) else None

    def has_daemon(self) -> bool:
        return True


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(the daemon's pid, its child's), both marked as processes of the data dir."""
    data = tmp_path / "data"
    mark = {**os.environ, "RESTIC_PASSWORD_FILE": str(data / "restic.pass")}
    daemon = subprocess.Popen([sys.executable, "-c", TREE], env=mark, stdout=subprocess.PIPE,
                              text=True)
    assert daemon.stdout is not None
    child = int(daemon.stdout.readline())
    try:
        yield daemon.pid, child
    finally:
        for pid in (child, daemon.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        daemon.wait(10)


def _agent(tmp_path: Path, daemon: int) -> Agent:
    return Agent(AgentOptions(data_dir=tmp_path / "data", stop_services_on_exit=True),
                 services=Daemon(daemon))


def test_an_agent_that_ends_on_an_error_leaves_the_platforms_running(
        tmp_path: Path, tree: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent(tmp_path, tree[0])

    def crash() -> None:
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(agent, "_run", crash)
    with pytest.raises(RuntimeError, match="dictionary changed size"):
        agent.run()
    assert all(alive(pid) for pid in tree), "a crash stopped the platforms"


def test_a_stop_that_was_asked_for_stops_them(
        tmp_path: Path, tree: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent(tmp_path, tree[0])
    monkeypatch.setattr(agent, "_run", agent.stopping.set)  # the loop's end at SIGTERM
    agent.run()
    wait_until(lambda: not any(alive(pid) for pid in tree), 30,
               "the daemon and its child stopped")


def test_an_error_on_the_way_of_an_asked_stop_still_stops_them(
        tmp_path: Path, tree: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """supervisord that does not exit in time, say: the stop was asked for all the same."""
    agent = _agent(tmp_path, tree[0])

    def stop_then_fail() -> None:
        agent.stopping.set()
        raise RuntimeError("supervisord did not exit in 60 s; killed")

    monkeypatch.setattr(agent, "_run", stop_then_fail)
    with pytest.raises(RuntimeError, match="did not exit"):
        agent.run()
    wait_until(lambda: not any(alive(pid) for pid in tree), 30,
               "the daemon and its child stopped")
