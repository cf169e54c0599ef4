"""State tells the truth (issue 11): a crashed process is an event with how it ended and how
often, and a platform that does not serve is `degraded` with the reason until it serves
again. Real kills of the real app under the session's control plane."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from pathlib import Path

import pytest

from tests.conftest import ControlPlaneProcess, wait_until

pytestmark = pytest.mark.slow


def app_pid(plane: ControlPlaneProcess, platform_id: str) -> int:
    """The platform's web process on the plane's own host."""
    uid = pwd.getpwnam(f"tp-{platform_id}").pw_uid
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if not entry.name.isdigit() or entry.stat().st_uid != uid:
                continue
            if b"bodyshop.server" in (entry / "cmdline").read_bytes() and \
                    str(plane.data_dir).encode() in (entry / "environ").read_bytes():
                return int(entry.name)
    raise AssertionError("no app process found")


def events(plane: ControlPlaneProcess, ref: str, kind: str) -> list[str]:
    return [e["message"] for e in plane.cli_json("events", "--platform", ref)
            if e["kind"] == kind]


def test_a_crashed_app_is_told_and_a_hung_one_degrades_the_platform(
        plane: ControlPlaneProcess, isv: str) -> None:
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                          "bodyshop@1.0.0", "--wait")
    ref = f"{isv}/t1"
    for n in (1, 2):
        os.kill(app_pid(plane, made["id"]), signal.SIGKILL)
        wait_until(lambda n=n: any(f"{n} time(s) in the last hour" in m
                                   for m in events(plane, ref, "PROCESS_RESTARTED")),
                   30, f"restart {n} told", every=0.5)
    told = events(plane, ref, "PROCESS_RESTARTED")
    assert len(told) == 2, told
    assert all("terminated by SIGKILL" in m and f"{made['id']}-a-web-0" in m for m in told)
    wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "ready", 30,
               "ready again after the restarts")

    hung = app_pid(plane, made["id"])
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "degraded", 60,
                   "the platform degraded", every=0.5)
        shown = plane.cli_json("platform", "show", ref)
        assert "app" in shown["error"], shown
        assert events(plane, ref, "PLATFORM_DEGRADED")
    finally:
        os.kill(hung, signal.SIGCONT)
    wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "ready", 60,
               "ready again", every=0.5)
    assert plane.cli_json("platform", "show", ref)["error"] is None
    assert events(plane, ref, "PLATFORM_RECOVERED")
