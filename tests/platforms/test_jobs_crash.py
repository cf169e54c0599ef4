"""Crash safety with real SIGKILLs: jobs resume, platforms keep serving, nothing is doubled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, make_isv

pytestmark = pytest.mark.slow


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_named(plane: ControlPlaneProcess, word: str) -> int:
    assert plane.process is not None
    for pid in descendants(plane.process.pid):
        if f"tenantry.cli.run {word}" in cmdline(pid):
            return pid
    raise AssertionError(f"no {word} process under tenantry up")


def wait_job(plane: ControlPlaneProcess, job_id: int, until: Any, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = plane.api().get(f"/jobs/{job_id}").json()
            if until(job):
                return job
        except (httpx.HTTPError, ValueError):  # the API may be down on purpose
            pass
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s")


def placed(job: dict) -> bool:
    return any(s["name"] == "place" and s["state"] == "done" for s in job["steps"])


def ended(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed")


def start_create(plane: ControlPlaneProcess, isv: str, tenant: str) -> tuple[str, int]:
    resp = plane.api().post(f"/isvs/{isv}/platforms",
                            json={"tenants": [tenant], "app": "bodyshop@1.0.0"})
    assert resp.status_code == 202, resp.text
    return resp.json()["platform"]["id"], resp.json()["job_id"]


def assert_single_copies(plane: ControlPlaneProcess, platform_id: str) -> None:
    programs = sorted(p.stem for p in
                      (plane.data_dir / "agent" / "services" / "programs").glob(
                          f"{platform_id}-*.conf"))
    assert programs == [f"{platform_id}-a-web-0", f"{platform_id}-db"]
    pgdata = str(plane.data_dir / "agent" / "platforms" / platform_id / "pgdata")
    postmasters = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                   if cmdline(pid).strip().endswith(pgdata)]
    assert len(postmasters) == 1, postmasters


def test_worker_killed_mid_job_resumes(own_plane: ControlPlaneProcess,
                                       bundles: dict[str, Path]) -> None:
    isv = make_isv(own_plane, bundles)
    worker = child_named(own_plane, "serve-worker")
    platform_id, job_id = start_create(own_plane, isv, "t1")
    wait_job(own_plane, job_id, placed)
    os.kill(worker, signal.SIGKILL)
    job = wait_job(own_plane, job_id, ended)
    assert job["state"] == "succeeded", job
    assert child_named(own_plane, "serve-worker") != worker  # `up` started a new one
    assert own_plane.https(f"t1.{isv}.localhost", "/health").status_code == 200
    assert_single_copies(own_plane, platform_id)


def test_a_clean_stop_pauses_a_running_job_and_the_next_start_resumes_it(
        own_plane: ControlPlaneProcess, bundles: dict[str, Path]) -> None:
    """Ctrl-C does not wait for running jobs to end (a create waits for its first full backup,
    a drill for minutes): each pauses at its next step or wait, and the next `up` resumes it
    from there. The stopping worker hands its jobs to nobody while it stops."""
    isv = make_isv(own_plane, bundles)
    platform_id, job_id = start_create(own_plane, isv, "t1")
    wait_job(own_plane, job_id, placed)
    own_plane.stop()
    worker_log = (own_plane.data_dir / "logs" / "worker.log").read_text()
    assert f"job {job_id} paused in step" in worker_log
    assert "left by a dead worker" not in worker_log

    own_plane.start()
    job = wait_job(own_plane, job_id, ended)
    assert job["state"] == "succeeded", job
    assert own_plane.https(f"t1.{isv}.localhost", "/health").status_code == 200
    assert_single_copies(own_plane, platform_id)


def test_whole_tree_killed_platforms_keep_serving_and_job_resumes(
        own_plane: ControlPlaneProcess, bundles: dict[str, Path]) -> None:
    isv = make_isv(own_plane, bundles)
    first = own_plane.cli_json("platform", "create", isv, "--tenant", "t1",
                               "--app", "bodyshop@1.0.0", "--wait")
    second_id, job_id = start_create(own_plane, isv, "t2")
    wait_job(own_plane, job_id, placed)

    assert own_plane.process is not None
    tree = [own_plane.process.pid, *descendants(own_plane.process.pid)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    own_plane.process.wait()
    # Control plane and agent are gone; the platform they made still answers.
    for _ in range(3):
        assert own_plane.https(f"t1.{isv}.localhost", "/health").status_code == 200
        time.sleep(0.5)

    own_plane.start()
    job = wait_job(own_plane, job_id, ended)
    assert job["state"] == "succeeded", job
    assert own_plane.https(f"t2.{isv}.localhost", "/health").status_code == 200
    assert own_plane.https(f"t1.{isv}.localhost", "/health").status_code == 200
    assert_single_copies(own_plane, first["id"])
    assert_single_copies(own_plane, second_id)


def test_api_killed_mid_job_resumes(own_plane: ControlPlaneProcess,
                                    bundles: dict[str, Path]) -> None:
    isv = make_isv(own_plane, bundles)
    api = child_named(own_plane, "serve-api")
    agent = child_named(own_plane, "agent")
    platform_id, job_id = start_create(own_plane, isv, "t1")
    wait_job(own_plane, job_id, placed)
    os.kill(api, signal.SIGKILL)
    os.kill(agent, signal.SIGKILL)
    job = wait_job(own_plane, job_id, ended)
    assert job["state"] == "succeeded", job
    assert own_plane.https(f"t1.{isv}.localhost", "/health").status_code == 200
    assert_single_copies(own_plane, platform_id)
