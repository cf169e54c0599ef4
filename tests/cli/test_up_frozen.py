"""`up` tells a frozen child (its heartbeat stopped) from a living one: a real child process
with the heartbeat of tenantry.cli.run, stopped and continued with real signals."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from tenantry.cli.up import Child
from tests.conftest import wait_until

BEATING = ("import time\nfrom tenantry.core.hang import start_heartbeat\n"
           "start_heartbeat(every=0.2)\ntime.sleep(120)")


def test_a_stopped_child_is_frozen_and_a_continued_one_is_not(tmp_path: Path) -> None:
    child = Child("worker", [sys.executable, "-c", BEATING], tmp_path / "worker.log",
                  heartbeat=tmp_path / "run" / "worker.beat")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "worker.beat").touch()  # an old child's: gone at the start
    os.utime(tmp_path / "run" / "worker.beat", (0, 0))
    child.start()
    assert child.process is not None
    try:
        wait_until(lambda: (tmp_path / "run" / "worker.beat").exists(), 20, "the first beat")
        assert child.frozen_for(1.0) is None
        os.kill(child.process.pid, signal.SIGSTOP)
        wait_until(lambda: child.frozen_for(1.0), 10, "seen frozen")
        assert (child.frozen_for(1.0) or 0) >= 1.0
        os.kill(child.process.pid, signal.SIGCONT)
        wait_until(lambda: child.frozen_for(1.0) is None, 10, "beating again")
    finally:
        child.process.kill()
        child.process.wait()
    assert child.frozen_for(1.0) is None  # a dead child is for the restart, not frozen


def test_a_child_that_never_beats_is_frozen_only_after_its_first_beat_is_due(
        tmp_path: Path) -> None:
    child = Child("api", [sys.executable, "-c", "import time; time.sleep(120)"],
                  tmp_path / "api.log", heartbeat=tmp_path / "run" / "api.beat")
    child.start()
    assert child.process is not None
    try:
        assert child.frozen_for(1.0) is None  # starting: not frozen yet
        child.started_at = time.monotonic() - 31  # as if it had started 31 s ago
        assert (child.frozen_for(1.0) or 0) >= 30
    finally:
        child.process.kill()
        child.process.wait()
