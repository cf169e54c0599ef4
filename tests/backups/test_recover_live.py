"""`dr recover`: a platform whose host is gone, rebuilt on another host from its repository
alone (database and files), keeping its id, name and hostname. The lost host is a second
agent on this machine, killed with everything it started and its directory deleted."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backups.test_backups_live import _photo, _photos, _registrations
from tests.conftest import (
    TENANTRY,
    ControlPlaneProcess,
    free_port,
    port_block,
    release_port_block,
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


def _processes_of_user(user: str, where: Path) -> list[str]:
    """Live processes (not zombies) running as `user` whose command line or environment
    names `where` (both hosts are on this machine, with the same platform users)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if not entry.name.isdigit() or entry.stat().st_uid != uid:
                continue
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            named = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            if str(where).encode() not in named:
                continue
            found.append(f"{entry.name}: " + (entry / "cmdline").read_bytes().replace(
                b"\0", b" ").decode(errors="replace"))
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


@contextlib.contextmanager
def _second_host(plane: ControlPlaneProcess) -> Iterator[tuple[str, subprocess.Popen[bytes],
                                                               Path]]:
    """A second host's agent on this machine, in a region of its own (no other test's
    platform lands there); whatever it ran is killed and its directory deleted at the end."""
    token = plane.cli_json("host", "enroll-token")["token"]
    root = short_tmp("tnr-")
    region = f"dr{os.getpid() % 1000}{secrets.token_hex(2)}"
    name = f"{region}-host"
    log = (root / "agent.log").open("wb")
    ports = port_block()
    agent = subprocess.Popen(
        [*TENANTRY, "agent", "--data-dir", str(root / "agent"), "--server", plane.url,
         "--region", region, "--name", name, "--ingress-port", str(free_port()),
         "--port-range", "{}-{}".format(*ports), "--stop-services-on-exit"],
        env={**plane.env, "TENANTRY_ENROLL_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_until(lambda: any(h["name"] == name and h["state"] == "online"
                               for h in plane.cli_json("host", "list")), 60,
                   "the second host online")
        yield name, agent, root
    finally:
        if agent.poll() is None:
            _lose_the_host(agent, root)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        # No later test's platform may be placed on it while it still counts as online.
        plane.cli("host", "revoke", name, check=False)
        release_port_block(ports)


def _served_by(plane: ControlPlaneProcess, url: str) -> ControlPlaneProcess:
    """The plane's client, pointed at the ingress port of the host serving `url`."""
    return ControlPlaneProcess(data_dir=plane.data_dir, listen_port=plane.listen_port,
                               ingress_port=int(url.rsplit(":", 1)[1].strip("/")))


def test_dr_recover_rebuilds_a_lost_hosts_platform_on_another_host(
        plane: ControlPlaneProcess, isv: str) -> None:
    with _second_host(plane) as (name, agent, root):
        region = name.removesuffix("-host")
        made = plane.cli_json("platform", "create", isv, "--tenant", "t1", "--region", region,
                              "--app", "bodyshop@1.0.0", "--wait")
        assert made["host"] == name
        ref = f"{isv}/t1"
        probe = _served_by(plane, made["url"])
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
                                if h["name"] == name) == "offline", 90,
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


def test_dr_drill_recovers_onto_another_host(plane: ControlPlaneProcess, isv: str) -> None:
    """`dr drill --host`: the load and the destruction on the platform's host, the recovery
    from the repository alone on the other; the count of lost commits uses the log the
    first host kept of the load."""
    with _second_host(plane) as (name, _, _):
        made = plane.cli_json("platform", "create", isv, "--tenant", "t2", "--region", "local",
                              "--app", "bodyshop@1.0.0", "--wait")
        assert made["host"] == "local"
        ref, host = f"{isv}/t2", f"t2.{isv}.localhost"
        assert plane.https(host, "/api/jobs", "POST",
                           json={"registration": "DR 2", "customer": "Ana"}).status_code == 201
        refused = plane.cli("dr", "drill", ref, "--host", "nowhere", check=False)
        assert refused.returncode == 2 and "nowhere" in refused.stderr

        drill = plane.cli_json("dr", "drill", ref, "--host", name, "--seconds", "12")
        print("drill elsewhere:", drill)
        assert drill["result"] == "ok", drill
        assert (drill["host"], drill["same_host"]) == (name, False)
        assert drill["acked_commits"] > 50
        assert 0 <= drill["lost_commits"] < drill["acked_commits"]
        assert drill["rpo_seconds"] is not None and drill["rpo_seconds"] <= 15
        assert drill["rto_seconds"] is not None and 0 < drill["rto_seconds"] < 180
        shown = plane.cli_json("platform", "show", ref)
        assert (shown["host"], shown["state"]) == (name, "ready")
        assert _registrations(_served_by(plane, shown["url"]), host) == ["DR 2"]
        events = plane.cli_json("events", "--platform", ref)
        told = next(e["message"] for e in events if e["kind"] == "DRILL")
        assert f"recovered on {name} (another host; the load ran on local)" in told
        # The first host let go of it: no process of the platform runs there any more.
        user = f"tp-{made['id']}"
        try:
            wait_until(lambda: not _processes_of_user(user, plane.data_dir), 60,
                       "the first host to stop what was left of the platform")
        except AssertionError:
            print("still running:", _processes_of_user(user, plane.data_dir))
            raise
        plane.cli("platform", "destroy", ref, "--wait")


def dt_ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
