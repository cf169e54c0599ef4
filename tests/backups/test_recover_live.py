"""`dr recover`: a platform whose host is gone, rebuilt on another host from its repository
alone (database and files), keeping its id, name and hostname. The lost host is a second
agent on this machine, killed with everything it started and its directory deleted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.backups.test_backups_live import _photo, _photos, _registrations
from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    free_port,
    port_block,
    short_tmp,
    wait_until,
)

pytestmark = pytest.mark.slow


def _processes_of(root: Path) -> list[int]:
    """PIDs whose command line, working directory or environment names `root`."""
    found = []
    needle = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            if needle in cmdline or cwd.startswith(needle) or needle in environ:
                found.append(int(entry.name))
    return found


def _lose_the_host(agent: subprocess.Popen[bytes], root: Path) -> None:
    """The host dies: every process it ran is SIGKILLed, its disk is gone."""
    agent.kill()
    agent.wait(30)
    for _ in range(3):
        for pid in _processes_of(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    shutil.rmtree(root, ignore_errors=True)


def test_dr_recover_rebuilds_a_lost_hosts_platform_on_another_host(
        plane: ControlPlaneProcess, isv: str) -> None:
    token = plane.cli_json("host", "enroll-token")["token"]
    root = short_tmp("tnr-")
    region = f"dr{os.getpid() % 1000}"
    log = (root / "agent.log").open("wb")
    agent = subprocess.Popen(
        [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", plane.url,
         "--region", region, "--name", f"{region}-host", "--ingress-port", str(free_port()),
         "--port-range", "{}-{}".format(*port_block()), "--stop-services-on-exit"],
        env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_until(lambda: any(h["name"] == f"{region}-host" and h["state"] == "online"
                               for h in plane.cli_json("host", "list")), 60,
                   "the second host online")
        made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--region", region,
                              "--app", "bodyshop@1.0.0", "--wait")
        assert made["host"] == f"{region}-host"
        ref = f"{isv}/t1"
        probe = ControlPlaneProcess(data_dir=plane.data_dir, listen_port=plane.listen_port,
                                    ingress_port=int(made["url"].rsplit(":", 1)[1].strip("/")))
        host = f"t1.{isv}.localhost"
        job = probe.https(host, "/api/jobs", "POST",
                          json={"registration": "LOST 1", "customer": "Ana"}).json()["id"]
        photo = _photo(probe, host, job)
        assert plane.cli_json("backup", "run", ref, "--type", "incr", "--wait")["state"] == \
            "succeeded"  # the photo's snapshot
        assert probe.https(host, "/api/jobs", "POST",
                           json={"registration": "LOST 2", "customer": "Bo"}).status_code == 201
        committed = time.time()
        wait_until(lambda: plane.cli_json("backup", "window", ref)["latest"] is not None and
                   dt_ts(plane.cli_json("backup", "window", ref)["latest"]) >= committed, 40,
                   "the last commit archived", every=1)

        # While its host is up, recovery is refused: that is a restore in place's job.
        online = plane.cli("dr", "recover", ref, "--host", "local", check=False)
        assert online.returncode != 0 and "is online" in online.stderr, online.stderr

        _lose_the_host(agent, root)
        wait_until(lambda: next(h["state"] for h in plane.cli_json("host", "list")
                                if h["name"] == f"{region}-host") == "offline", 90,
                   "the lost host offline", every=1)
        for args, word in ((["--host", "nowhere"], "host"),
                           (["--host", "local", "--region", "local"], "not both"),
                           (["--to-time", "2020-01-01T00:00:00Z"], "outside")):
            refused = plane.cli("dr", "recover", ref, *args, check=False)
            assert refused.returncode == 2 and word in refused.stderr, refused.stderr

        started = time.monotonic()
        done = plane.cli_json("dr", "recover", ref, "--host", "local", "--wait")
        print(f"dr recover took {time.monotonic() - started:.1f} s")
        assert done["state"] == "succeeded", done
        shown = plane.cli_json("platform", "show", ref)
        assert (shown["id"], shown["host"], shown["state"]) == (made["id"], "local", "ready")
        assert shown["url"].startswith(f"https://{host}:")  # the same name, now served here
        assert _registrations(plane, host) == ["LOST 1", "LOST 2"]  # every archived commit
        assert _photos(plane, host, job) == [photo]  # and its files
        kinds = [e["kind"] for e in plane.cli_json("events", "--platform", ref)]
        assert "RECOVERED" in kinds
        # Backed up again where it lives now, into the same repository.
        assert plane.cli_json("backup", "list", ref)[-1]["type"] == "full"
        assert plane.https(host, "/api/jobs", "POST",
                           json={"registration": "NEW 3", "customer": "Cy"}).status_code == 201
    finally:
        if agent.poll() is None:
            _lose_the_host(agent, root)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def dt_ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
