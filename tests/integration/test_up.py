"""`tenantry up --demo`: a working system from an empty data dir; Ctrl-C leaves nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import ControlPlaneProcess

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait_ready(plane: ControlPlaneProcess, names: set[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        platforms = {p["name"]: p["state"] for p in plane.cli_json("platform", "list",
                                                                   "--isv", "bms")}
        if names <= {n for n, s in platforms.items() if s == "ready"}:
            return
        time.sleep(1)
    raise AssertionError(f"demo platforms not ready: {platforms}")


def test_demo_then_clean_stop_then_everything_back(own_plane: ControlPlaneProcess) -> None:
    plane = own_plane
    plane.stop()
    plane.start("--demo")
    wait_ready(plane, {"lbh", "dlg"})
    for tenant in ("lbh", "dlg"):
        assert plane.https(f"{tenant}.bms.localhost", "/health").status_code == 200
    assert oct((plane.data_dir / "admin-password").stat().st_mode & 0o777) == "0o600"
    assert oct((plane.data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
    assert "admin-password" in plane.log.read_text()

    assert plane.process is not None
    plane.process.send_signal(signal.SIGINT)
    assert plane.process.wait(120) == 0
    # Nothing of it runs any more: API, worker, agent, supervisord, Caddy, every PostgreSQL.
    assert processes_mentioning(str(plane.data_dir)) == []

    plane.start("--demo")  # again: the demo sees its ISV and leaves it alone
    wait_ready(plane, {"lbh", "dlg"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if all(plane.https(f"{t}.bms.localhost", "/health").status_code == 200
                   for t in ("lbh", "dlg")):
                break
        except httpx.HTTPError:
            pass  # still coming up
        time.sleep(0.5)
    else:
        raise AssertionError("the demo platforms did not come back")
    # The demo does not run twice.
    assert len(plane.cli_json("platform", "list", "--isv", "bms")) == 2
