"""State tells the truth (issue 11): a crashed process is an event with how it ended and how
often, a frozen one is killed and started again, and a platform that does not serve is
`degraded` with the reason until it serves again. Real kills and stops of the real app and
database under the session's control plane."""

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


def test_crashed_and_hung_apps_and_a_frozen_database_are_restarted_and_told(
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

    # A frozen database (the postmaster and its backends stopped): the app cannot answer, so
    # the agent asks the postmaster, and one that gives no answer for DB_HUNG_AFTER s is
    # killed with its backends; supervisord starts it again, crash recovery keeps what was
    # committed, and the app (not hung itself) is left alone.
    job = plane.https(f"t1.{isv}.localhost", "/api/jobs", "POST",
                      json={"registration": "FROZEN1", "customer": "before the freeze"})
    assert job.status_code == 201, job.text
    pgdata = plane.data_dir / "agent" / "platforms" / made["id"] / "pgdata"
    postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    cluster = [postmaster, *children_of(postmaster)]  # the backends too: the app's session
    for pid in cluster:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: any(f"{made['id']}-db" in m and "SIGKILL" in m
                               for m in events(plane, ref, "PROCESS_RESTARTED")), 60,
                   "the frozen postmaster killed and started again", every=0.5)
    finally:
        for pid in cluster:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    wait_until(lambda: plane.https(f"t1.{isv}.localhost", "/health").status_code == 200, 30,
               "serving again after the database's restart")
    jobs = plane.https(f"t1.{isv}.localhost", "/api/jobs").json()
    assert "FROZEN1" in {j["registration"] for j in jobs}
    web = [m for m in events(plane, ref, "PROCESS_RESTARTED") if "-web-" in m]
    assert len(web) == 3, web  # the app was left alone
    wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "ready", 60,
               "ready after the database's restart", every=0.5)

    # Four unexpected exits within a couple of minutes are a crash loop: the monitoring's
    # `restarts` check (three in ten minutes) has an alert open for the platform.
    wait_until(lambda: any(a["check"] == "restarts" for a in plane.cli_json(
        "alert", "list", "--platform", ref, "--open")), 90, "the crash-loop alert", every=1)


def test_a_hung_app_that_does_not_opt_in_shows_the_platform_degraded(
        plane: ControlPlaneProcess, isv: str) -> None:
    """bodyshop 1.0.0 sets no `restart_after`: a hung web process is left to the monitoring,
    and the platform is shown degraded with the reason until it answers again."""
    made = plane.cli_json("platform", "create", isv, "--tenant", "t2", "--app",
                          "bodyshop@1.0.0", "--wait")
    ref = f"{isv}/t2"
    app = app_pid(plane, made["id"])
    os.kill(app, signal.SIGSTOP)
    try:
        wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "degraded", 60,
                   "the platform degraded", every=0.5)
        shown = plane.cli_json("platform", "show", ref)
        assert "app" in shown["error"], shown
        assert events(plane, ref, "PLATFORM_DEGRADED")
    finally:
        os.kill(app, signal.SIGCONT)
    wait_until(lambda: plane.cli_json("platform", "show", ref)["state"] == "ready", 60,
               "ready again", every=0.5)
    assert plane.cli_json("platform", "show", ref)["error"] is None
    assert events(plane, ref, "PLATFORM_RECOVERED")
    assert not events(plane, ref, "PROCESS_RESTARTED")  # the app was left alone
