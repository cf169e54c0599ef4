"""The control plane's own PostgreSQL, real: whether it answers, as `up` asks every second."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

from tenantry.core.pgserver import ControlPlaneDatabase
from tests.conftest import short_tmp


def test_responds_tells_a_frozen_store_without_stopping_the_other_threads() -> None:
    """A frozen store (SIGSTOP) takes the connection and answers nothing: `responds` says
    False after its timeout, and meanwhile every other thread of the process runs (the one
    that pings the service manager's watchdog among them), which a GIL held through the
    wait would stop."""
    root = short_tmp("tnpg-")
    data_dir = root / "data"
    data_dir.mkdir()
    db = ControlPlaneDatabase(data_dir)
    db.start()
    pid = db.postmaster_pid()
    assert pid is not None
    try:
        assert db.responds()
        os.kill(pid, signal.SIGSTOP)
        try:
            ticks: list[float] = []
            done = threading.Event()

            def tick() -> None:
                while not done.is_set():
                    ticks.append(time.monotonic())
                    time.sleep(0.05)

            ticker = threading.Thread(target=tick)
            ticker.start()
            t0 = time.monotonic()
            answered = db.responds(timeout=2)
            took = time.monotonic() - t0
            done.set()
            ticker.join()
            assert not answered and 1.5 < took < 5, took
            gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
            assert max(gaps) < 0.5, max(gaps)  # the other thread never waited on the probe
        finally:
            os.kill(pid, signal.SIGCONT)
        assert db.responds()
    finally:
        db.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not db.responds(timeout=2)  # nobody there: False, at once
