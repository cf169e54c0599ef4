"""Which processes are a data dir's leftovers: read from a /proc written by the test, and from
a real cgroup."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenantry.core import cgroup, leftovers
from tests.conftest import alive, wait_until

DATA = "/srv/tn/data"


def proc_dir(tmp_path: Path, table: dict[int, tuple[int, list[str], dict[str, str]]]) -> Path:
    root = tmp_path / "proc"
    for pid, (ppid, argv, env) in table.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        state = "Z" if argv == ["<zombie>"] else "S"
        (d / "stat").write_text(f"{pid} (x y) {state} {ppid} 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0")
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))
    return root


def test_finds_the_data_dirs_programs_and_what_they_started(tmp_path: Path) -> None:
    me, parent = os.getpid(), os.getppid()
    sock = f"unix://{DATA}/agent/services/supervisor.sock"
    proc = proc_dir(tmp_path, {
        parent: (1, ["bash"], {}),
        me: (parent, ["/usr/bin/python3", "-m", "tenantry.cli.run", "agent", "--data-dir",
                      f"{DATA}/agent"], {}),
        # an orphaned cluster and its backend, which names nothing
        101: (1, ["/usr/lib/postgresql/15/bin/postgres", "-D", f"{DATA}/agent/p1/pgdata"], {}),
        102: (101, ["postgres: checkpointer"], {}),
        # an orphaned app: only its environment tells
        103: (1, ["python", "-m", "bodyshop.server"], {"SUPERVISOR_SERVER_URL": sock}),
        104: (1, ["/usr/bin/caddy", "run", "--config", f"{DATA}/agent/ingress/c.json"], {}),
        105: (1, ["pgbackrest", f"--config={DATA}/agent/p1/backup/pgbackrest.conf",
                  "archive-push:async"], {}),
        # not leftovers: another data dir, an operator's tail, a sibling path, a zombie
        201: (1, ["/usr/bin/caddy", "run", "--config", f"{DATA}2/agent/ingress/c.json"], {}),
        202: (1, ["tail", "-f", f"{DATA}/logs/agent.log"], {}),
        203: (1, ["python", "-m", "other"],
              {"SUPERVISOR_SERVER_URL": "unix:///elsewhere/supervisor.sock"}),
        204: (1, ["<zombie>"], {}),
        # my own child: a backup running now
        301: (me, ["runuser", "-u", "tp-1", "--", "pgbackrest",
                   f"--config={DATA}/agent/p1/backup/pgbackrest.conf", "backup"], {}),
    })
    everything = {x.pid for x in leftovers.find(Path(DATA), proc=proc)}
    assert everything == {101, 102, 103, 104, 105, 301}
    found = leftovers.find(Path(DATA), proc=proc, spare_own=True,
                           spare=lambda x: x.archiver)
    assert {x.pid for x in found} == {101, 102, 103, 104}
    master = next(x for x in found if x.pid == 101)
    assert master.postmaster and not next(x for x in found if x.pid == 104).postmaster


def test_the_last_look_names_whatever_names_the_data_dir(tmp_path: Path) -> None:
    """Broader than `find`, for telling: command line, environment or working directory."""
    me, parent = os.getpid(), os.getppid()
    proc = proc_dir(tmp_path, {
        parent: (1, ["bash"], {}),
        me: (parent, ["tenantry", "up", "--data-dir", DATA], {}),
        201: (1, ["tail", "-f", f"{DATA}/logs/agent.log"], {}),
        202: (1, ["some-exporter"], {"ANY_SETTING": f"{DATA}/monitoring/x.yml"}),
        203: (1, ["bash"], {}),
        204: (1, ["/usr/bin/caddy", "run", "--config", f"{DATA}2/agent/ingress/c.json"], {}),
        205: (1, ["<zombie>"], {}),
    })
    (proc / "203" / "cwd").symlink_to(f"{DATA}/agent")
    (proc / "204" / "cwd").symlink_to("/")
    lines = leftovers.naming(Path(DATA), proc=proc)
    assert [line.split(" ", 1)[0] for line in lines] == ["201", "202", "203"]
    assert f"cwd {DATA}/agent" in lines[2] and "parent 1" in lines[2]


def test_a_live_supervisors_tree_is_adopted_not_stopped(tmp_path: Path) -> None:
    proc = proc_dir(tmp_path, {
        500: (1, ["/usr/bin/python3", "/usr/bin/supervisord", "-c",
                  f"{DATA}/agent/services/supervisord.conf"], {}),
        501: (500, ["/usr/lib/postgresql/15/bin/postgres", "-D", f"{DATA}/agent/p1/pgdata"],
              {}),
        502: (501, ["postgres: walwriter"], {}),
        600: (1, ["/usr/lib/postgresql/15/bin/postgres", "-D", f"{DATA}/agent/p1/scratch-t1"],
              {}),
    })
    assert {x.pid for x in leftovers.find(Path(DATA), proc=proc)} == {500, 501, 502, 600}
    assert [x.pid for x in leftovers.find(Path(DATA), proc=proc, spare_trees=[500])] == [600]


def test_a_data_dir_named_through_a_symlink_is_found(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    named = str(tmp_path / "link")
    proc = proc_dir(tmp_path, {
        700: (1, ["/usr/bin/caddy", "run", "--config", f"{named}/agent/ingress/c.json"], {}),
        701: (1, ["/usr/bin/caddy", "run", "--config", f"{real}/agent/ingress/c.json"], {}),
    })
    assert {x.pid for x in leftovers.find(tmp_path / "link", proc=proc)} == {700, 701}


def test_a_process_that_escaped_every_sign_is_found_by_its_cgroup(tmp_path: Path) -> None:
    """A daemon an app started: it double-forked, called setsid, cleared its environment and
    names nothing of the data dir; the data dir's cgroup (real, where the host has cgroup
    v2) still holds it, and `find` finds it there."""
    if cgroup.hierarchy() is None:
        pytest.skip("no writable cgroup v2 hierarchy on this host")
    data = tmp_path / "data"
    agent_dir = data / "agent"
    group = cgroup.group_for(agent_dir)
    assert group is not None and cgroup.recorded(data) == [group]
    # the escapee: started inside the group, then double-forked and renamed itself
    pid_file = tmp_path / "pid"
    subprocess.run([sys.executable, "-c", f"""
import os, sys, time
if os.fork(): sys.exit(0)
os.setsid()
if os.fork(): sys.exit(0)
open({str(pid_file)!r}, "w").write(str(os.getpid()))
os.execve("/bin/sleep", ["sleeper", "300"], {{}})
"""], check=True, preexec_fn=lambda: cgroup.join(group), env={})
    wait_until(pid_file.exists, 10, "the escapee's pid")
    escapee = int(pid_file.read_text())
    try:
        wait_until(lambda: b"sleeper" in Path(f"/proc/{escapee}/cmdline").read_bytes(), 10,
                   "the escapee renamed")
        found = leftovers.find(data)
        assert [x.pid for x in found] == [escapee], found
        assert leftovers.find(tmp_path / "other") == []  # another data dir's: not ours
        leftovers.stop(found, grace=5)
        wait_until(lambda: not alive(escapee), 10, "the escapee stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escapee, 9)
        wait_until(lambda: not cgroup.members(group), 10, "the group empty")
        cgroup.remove(group)
    assert not group.exists()


SPAWNS_ON_ITS_WAY_OUT = """
import os, signal, subprocess, sys, time
def out(*_):
    # as a postmaster's last WAL archiving starts pgBackRest's detached archiver
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                     start_new_session=True, env=dict(os.environ))
    sys.exit(0)
signal.signal(signal.SIGTERM, out)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_sweep_finds_what_a_stopped_process_started_on_its_way_out(tmp_path: Path) -> None:
    scope = tmp_path / "data"
    mark = {**os.environ, "RESTIC_PASSWORD_FILE": str(scope / "restic.pass")}
    first = subprocess.Popen([sys.executable, "-c", SPAWNS_ON_ITS_WAY_OUT], env=mark,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "ready"
    rounds: list[list[int]] = []
    try:
        leftovers.sweep(scope, tell=lambda found: rounds.append([x.pid for x in found]),
                        grace=10)
        first.wait(10)
        assert rounds[0] == [first.pid] and len(rounds) == 2, rounds
        assert first.pid not in rounds[1]
        assert leftovers.find(scope) == []  # the one it started went in the second round
    finally:
        for pid in [p for r in rounds for p in r]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_a_frozen_leftover_is_killed_at_once_and_a_running_one_stopped_gently(
        tmp_path: Path) -> None:
    """What a frozen `up` tree leaves is stopped by SIGSTOP: it would act on SIGTERM only once
    it runs again, so the sweep kills it at once rather than wait out the grace."""
    scope = tmp_path / "data"
    mark = {**os.environ, "RESTIC_PASSWORD_FILE": str(scope / "restic.pass")}
    program = "import time; print('ready', flush=True); time.sleep(120)"
    frozen, running = (subprocess.Popen([sys.executable, "-c", program], env=mark,
                                        stdout=subprocess.PIPE, text=True) for _ in range(2))
    try:
        for p in (frozen, running):
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        os.kill(frozen.pid, 19)  # SIGSTOP
        wait_until(lambda: leftovers.stopped(frozen.pid), 10, "the first one stopped")
        assert not leftovers.stopped(running.pid)
        found = leftovers.find(scope)
        assert {x.pid for x in found} == {frozen.pid, running.pid}
        t0 = time.monotonic()
        lines = leftovers.stop(found, grace=60)
        took = time.monotonic() - t0
        assert took < 10, took  # not the 60 s grace
        assert frozen.wait(5) == -9 and running.wait(5) == -15
        assert sorted(lines) == sorted([f"killed, frozen {frozen.pid} ({sys.executable} -c "
                                        f"{program})", f"stopped {running.pid} "
                                        f"({sys.executable} -c {program})"]), lines
    finally:
        for p in (frozen, running):
            with contextlib.suppress(ProcessLookupError):
                p.kill()
