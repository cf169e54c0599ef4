"""When a process that runs but does not answer is taken for frozen (tenantry.core.hang)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenantry.core import hang
from tenantry.core.config import Settings
from tests.conftest import alive, wait_until


def test_silence_counts_only_silence_in_a_row() -> None:
    s = hang.Silence(after=3)
    assert not s.observe(False, now=10)
    assert not s.observe(False, now=12.9)
    assert s.silent_for(now=12.9) == pytest.approx(2.9)
    assert not s.observe(True, now=13)  # one answer starts the count again
    assert s.silent_for(now=14) == 0
    assert not s.observe(False, now=14)
    assert not s.observe(False, now=16.5)
    assert s.observe(False, now=17)
    s.reset()
    assert not s.observe(False, now=18)


def test_a_heartbeat_stops_when_its_process_is_stopped(tmp_path: Path) -> None:
    beat = tmp_path / "run" / "child.beat"
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nfrom tenantry.core.hang import start_heartbeat\n"
                              "start_heartbeat(every=0.2)\ntime.sleep(60)"],
                             env={**os.environ, hang.HEARTBEAT_ENV: str(beat)})
    try:
        wait_until(lambda: beat.exists(), 20, "the first beat")
        time.sleep(0.6)
        age = hang.heartbeat_age(beat)
        assert age is not None and age < 0.6
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(1.5)
        age = hang.heartbeat_age(beat)
        assert age is not None and age >= 1.2
        os.kill(child.pid, signal.SIGCONT)
        wait_until(lambda: (hang.heartbeat_age(beat) or 9) < 0.5, 5, "beating again")
    finally:
        child.kill()
        child.wait()
    assert hang.heartbeat_age(tmp_path / "none.beat") is None


def test_kill_tree_ends_a_stopped_process_and_its_children() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
         "print(c.pid, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, start_new_session=False)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGSTOP)
    hang.kill_tree(parent.pid)
    parent.wait(10)
    assert parent.returncode == -signal.SIGKILL
    wait_until(lambda: not alive(child), 10, "the child gone too")


@pytest.mark.parametrize("value", ["1", "-5", "3601", "soon"])
def test_frozen_after_is_checked(value: str) -> None:
    with pytest.raises(ValueError, match="frozen_after"):
        Settings(frozen_after=value)  # type: ignore[arg-type]


def test_frozen_after_zero_means_never() -> None:
    assert Settings(frozen_after=0).frozen_after == 0
    assert Settings().frozen_after == 5


def test_stopped_finds_a_process_held_by_sigstop_for_its_limit() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watch = hang.Stopped()
        assert watch.look({child.pid: 2}, now=0) == []
        assert hang.cpu_ticks(child.pid) is not None
        os.kill(child.pid, signal.SIGSTOP)
        wait_until(lambda: hang.stopped(child.pid), 5, "the stop seen in /proc")
        assert watch.look({child.pid: 2}, now=10) == []  # the stop is seen from now on
        assert watch.look({child.pid: 2}, now=11.5) == []
        assert watch.look({child.pid: 2}, now=12) == [(child.pid, 2)]
        os.kill(child.pid, signal.SIGCONT)
        wait_until(lambda: not hang.stopped(child.pid), 5, "running again")
        assert watch.look({child.pid: 2}, now=13) == []
        os.kill(child.pid, signal.SIGSTOP)
        wait_until(lambda: hang.stopped(child.pid), 5, "stopped again")
        assert watch.look({child.pid: 2}, now=14) == []  # counted afresh after SIGCONT
    finally:
        child.kill()
        child.wait()
    assert not hang.stopped(child.pid) and hang.cpu_ticks(child.pid) is None
