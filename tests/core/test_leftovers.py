"""Which processes are a data dir's leftovers: read from a /proc written by the test."""

from __future__ import annotations

import os
from pathlib import Path

from tenantry.core import leftovers

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
