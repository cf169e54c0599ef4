"""`tenantry up` under a service manager's watchdog (issue 11: a frozen `up` is healed): a
real `up`, given a notify socket and WatchdogSec by tests.service_manager (systemd's side,
with the shipped unit's settings), says READY=1 and its progress, pings while it runs, keeps
the manager's variables from its children, and once frozen misses its pings; ended as
systemd ends it, it leaves its stack in its log, and a new `up` comes back and adopts what
the old one left running; that restart, and those `up` and the agent make, are events."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import children_of, running_plane, short_tmp, wait_until
from tests.service_manager import NotifyManager

pytestmark = pytest.mark.slow

SERVICES_DELAY = 10  # s the restarted agent waits before it adopts supervisord


@pytest.mark.timeout(300)
def test_a_frozen_up_is_ended_and_started_again_and_each_restart_is_an_event() -> None:
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
            # The new agent is slow to adopt supervisord, so that the kill below lands before
            # it watches: a death no agent saw is told too (its pid file names it).
            cp.extra_env["TENANTRY_TEST_DELAYS"] = f"agent.services={SERVICES_DELAY}"
            restarted_at = time.monotonic()
            cp.start()  # as Restart=always does
            wait_until(manager.ready.is_set, 60, "READY=1 from the new up")
            # only `up` was ended (KillMode=process): the new one adopted the running store
            assert (cp.data_dir / "controlplane" / "pgdata" / "postmaster.pid").read_text() \
                == store

            # Every restart is a PROCESS_RESTARTED event on the local host: `up`'s own
            # (told by the next `up`), an API process `up` restarted, and the supervisord
            # the agent started again, though it died before the agent adopted it.
            assert cp.process is not None
            api = next(c for c in children_of(cp.process.pid)
                       if b"serve-api" in Path(f"/proc/{c}/cmdline").read_bytes())
            os.kill(api, signal.SIGKILL)
            services = int((cp.data_dir / "agent" / "services" / "supervisord.pid")
                           .read_text())
            os.kill(services, signal.SIGKILL)
            # (the agent started after restarted_at: it still holds)
            assert time.monotonic() - restarted_at < SERVICES_DELAY

            def told() -> list[str]:
                try:
                    return [e["message"] for e in cp.cli_json("events", "--limit", "200")
                            if e["kind"] == "PROCESS_RESTARTED"]
                except AssertionError:  # the API is being restarted
                    return []

            wanted = ("tenantry-up on host local ended unexpectedly",
                      "tenantry-api on host local ended unexpectedly",
                      "supervisord on host local ended unexpectedly")
            wait_until(lambda: all(any(m.startswith(w) for m in told()) for w in wanted), 60,
                       "the three restarts told", every=0.5)
            messages = told()
            assert any(m.startswith(wanted[1]) and "(terminated by SIGKILL)" in m
                       for m in messages), messages
            assert any(m.startswith(wanted[2]) and f"(pid {services} gone)" in m
                       for m in messages), messages
    finally:
        manager.close()
