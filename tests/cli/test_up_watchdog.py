"""`tenantry up` under a service manager's watchdog (issue 11: a frozen `up` is healed): a
real `up`, given a notify socket and WatchdogSec by tests.service_manager (systemd's side,
with the shipped unit's settings), says READY=1 and its progress, pings while it runs, keeps
the manager's variables from its children, and once frozen misses its pings; ended as
systemd ends it, it leaves its stack in its log, and a new `up` comes back and adopts what
the old one left running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import children_of, running_plane, short_tmp, wait_until
from tests.service_manager import NotifyManager

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_a_frozen_up_misses_its_pings_and_is_ended_and_started_again() -> None:
    manager = NotifyManager(short_tmp("tnw-") / "notify.sock")
    try:
        with running_plane(env=manager.env) as cp:
            assert cp.process is not None
            wait_until(manager.ready.is_set, 60, "READY=1")
            said = [m.get("STATUS", "") for m in manager.messages]
            assert any(s.startswith("tenantry: data dir ") for s in said), said
            assert any(s.startswith("running: portal and API at ") for s in said), said
            pings = manager.pings
            time.sleep(2 * manager.watchdog_sec)
            assert manager.pings >= pings + 3 and not manager.expired()
            for child in children_of(cp.process.pid):  # API, worker, agent
                environ = Path(f"/proc/{child}/environ").read_bytes()
                assert b"NOTIFY_SOCKET=" not in environ and b"WATCHDOG_USEC=" not in environ

            store = (cp.data_dir / "controlplane" / "pgdata" / "postmaster.pid").read_text()
            os.kill(cp.process.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            wait_until(manager.expired, manager.watchdog_sec + 5, "the watchdog to expire")
            assert time.monotonic() - frozen_at <= manager.watchdog_sec + 1
            manager.expire(cp.process)
            assert cp.process.returncode == -signal.SIGABRT  # SIGABRT, not the later SIGKILL
            log = cp.log.read_text(errors="replace")
            assert "Fatal Python error: Aborted" in log, log[-3000:]  # and its threads' stacks

            manager.restarted()
            cp.start()  # as Restart=always does
            wait_until(manager.ready.is_set, 60, "READY=1 from the new up")
            # only `up` was ended (KillMode=process): the new one adopted the running store
            assert (cp.data_dir / "controlplane" / "pgdata" / "postmaster.pid").read_text() \
                == store
    finally:
        manager.close()
