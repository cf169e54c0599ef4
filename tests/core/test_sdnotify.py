"""`up`'s side of the service manager's notify protocol, against a real datagram socket (the
manager's side: tests.service_manager, which reads the shipped unit file)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tenantry.core.sdnotify import Notifier
from tests.conftest import wait_until
from tests.service_manager import NotifyManager, unit_seconds


def test_the_managers_variables_are_taken_so_no_child_speaks_for_up() -> None:
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "2000000", "PATH": "/bin"}
    notifier = Notifier.from_env(env)
    assert env == {"PATH": "/bin"}
    assert notifier.address == "/run/x.sock" and notifier.watchdog_every == 0.5
    # a watchdog meant for another process, or none asked for: no pings
    other = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "2000000",
             "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_every is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/x.sock"}).watchdog_every is None
    assert Notifier.from_env({"WATCHDOG_USEC": "bad"}).address is None
    # without a manager every call is a no-op
    assert not Notifier.from_env({}).send(READY="1")
    assert Notifier.from_env({}).start_watchdog(time.monotonic, 10) is None


def test_ready_status_and_pings_reach_the_manager_while_the_loop_turns(tmp_path: Path) -> None:
    manager = NotifyManager(tmp_path / "notify.sock", watchdog_sec=0.4, abort_sec=1)
    try:
        notifier = Notifier.from_env(dict(manager.env))
        notifier.status("tenantry: starting\nthe store")
        notifier.ready("running")
        wait_until(manager.ready.is_set, 5, "READY=1")
        assert {"STATUS": "tenantry: starting the store"} in manager.messages
        turned = {"at": time.monotonic()}
        notifier.start_watchdog(lambda: turned["at"], stall=0.5)
        for _ in range(8):  # the loop turns: pings keep the watchdog fed
            time.sleep(0.1)
            turned["at"] = time.monotonic()
            assert not manager.expired()
        assert manager.pings >= 5
        # the loop stops turning (wedged): the pings stop, and the watchdog expires
        wait_until(manager.expired, 5, "the watchdog to expire")
        pings = manager.pings
        time.sleep(0.3)
        assert manager.pings == pings
    finally:
        manager.close()


def test_an_abstract_socket_address_is_reached(tmp_path: Path) -> None:
    name = f"tenantry-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).send(STOPPING="1")
        assert sock.recv(100) == b"STOPPING=1"
    finally:
        sock.close()


def test_the_shipped_unit_gives_up_time_to_be_killed_and_back_within_the_target() -> None:
    """Issue 11's target is 10 s for a frozen `up`: the watchdog's period plus the restart."""
    assert unit_seconds("WatchdogSec") <= 3
    assert unit_seconds("RestartSec") < 1
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "tenantry.service"
    lines = unit.read_text().splitlines()
    for wanted in ("Type=notify", "KillMode=process", "Restart=always"):
        assert wanted in lines, wanted
