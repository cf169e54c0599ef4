"""State tells the truth (issue 11): a crashed process is an event with how it ended and how
often, and a platform that does not serve is `degraded` with the reason until it serves
again. Real kills of the real app under the session's control plane."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import time
from pathlib import Path

import pytest

from tenantry.agent.main import RECHECK
from tests.conftest import ControlPlaneProcess, children_of, wait_until
from tests.platforms.test_platforms import variant

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


def test_crashed_and_hung_apps_are_restarted_and_told_a_hung_database_degrades(
        plane: ControlPlaneProcess, isv: str, bundles: dict[str, Path],
        tmp_path: Path) -> None:
    # bodyshop opting in to restarts of a hung web process ([health] restart_after)
    lively = variant(bundles["1.0.0"], tmp_path / "lively", "1.0.1", replace={
        'path = "/health"': 'path = "/health"\nrestart_after = 5'})
    plane.cli("app", "release", isv, str(lively))
    made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--app",
                          "bodyshop@1.0.1", "--wait")
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

    # A hung app (SIGSTOP: supervisord still sees it running) is killed by the agent once
    # it has not answered its health check for restart_after seconds, and started again.
    # Only a process the agent has seen answer counts as hung (else it is starting): the
    # restarted one answers, and the agent looks at a settled platform every RECHECK s.
    wait_until(lambda: plane.https(f"t1.{isv}.localhost", "/health").status_code == 200, 30,
               "the restarted app answering")
    time.sleep(RECHECK + 1)
    os.kill(app_pid(plane, made["id"]), signal.SIGSTOP)
    wait_until(lambda: len(events(plane, ref, "PROCESS_RESTARTED")) == 3, 60,
               "the hung app killed and started again", every=0.5)
    assert any("3 time(s) in the last hour" in m and "terminated by SIGKILL" in m
               for m in events(plane, ref, "PROCESS_RESTARTED"))
    wait_until(lambda: plane.https(f"t1.{isv}.localhost", "/health").status_code == 200, 30,
               "serving again")

    # A hung database: the app cannot answer and the agent cannot mend it, so the platform
    # is shown degraded with the reason, until the database answers again.
    pgdata = plane.data_dir / "agent" / "platforms" / made["id"] / "pgdata"
    postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    cluster = [postmaster, *children_of(postmaster)]  # the backends too: the app's session
    for pid in cluster:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "degraded", 60,
                   "the platform degraded", every=0.5)
        shown = plane.cli_json("platform", "show", ref)
        assert "app" in shown["error"], shown
        assert events(plane, ref, "PLATFORM_DEGRADED")
    finally:
        for pid in cluster:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "ready", 60,
               "ready again", every=0.5)
    assert plane.cli_json("platform", "show", ref)["error"] is None
    assert events(plane, ref, "PLATFORM_RECOVERED")
    assert len(events(plane, ref, "PROCESS_RESTARTED")) == 3  # the app was left alone
