"""Idle cost of a small platform's PostgreSQL cluster, under candidate settings.

Starts N real clusters per candidate (initdb with the size "s" settings the agent writes,
WAL archiving on as a platform has it, the archive command replaced by `true` so that only
PostgreSQL's own work is measured), all at once and side by side, leaves them idle, and
measures over the same window the CPU of each cluster's processes (the postmaster's own
time, its children's, and the time of the children it reaped in the window, from
/proc/PID/stat), how many times each woke a child process (forks), and how many WAL segments
each archived (every one is a `pgbackrest archive-push` on a platform).

    .venv/bin/python bench/pg_idle.py --clusters 6 --seconds 300
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_report, machine_facts, md_table  # noqa: E402

from tenantry.agent.pgcluster import _COMMON, IDLE, SIZES, pg_bin  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
OWNER = "postgres"
ARCHIVING = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'true'",
             "archive_timeout": "10"}
# PostgreSQL's own defaults, for the baseline: the keys of IDLE as PostgreSQL ships them.
PG_DEFAULTS = {"autovacuum_naptime": "60", "bgwriter_delay": "200", "wal_writer_delay": "200",
               "checkpoint_timeout": "300"}
CANDIDATES: dict[str, dict[str, str]] = {
    "PostgreSQL's defaults": PG_DEFAULTS,
    "naptime only": PG_DEFAULTS | {"autovacuum_naptime": IDLE["autovacuum_naptime"]},
    "shipped (IDLE)": dict(IDLE),
}


def stat_ticks(pid: int) -> tuple[int, int] | None:
    """(its own CPU ticks, those of the children it reaped) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return utime + stime, cutime + cstime


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def cluster_ticks(postmaster: int) -> tuple[int, int, set[int]]:
    """(CPU ticks of the postmaster, its live children and its reaped children; the reaped
    children's alone; the live children's pids)."""
    own = stat_ticks(postmaster)
    if own is None:
        raise SystemExit(f"postmaster {postmaster} is gone")
    total = own[0] + own[1]
    kids = set(children(postmaster))
    for kid in kids:
        t = stat_ticks(kid)
        if t is not None:
            total += t[0]
    return total, own[1], kids


class Cluster:
    def __init__(self, root: Path, name: str, settings: dict[str, str]) -> None:
        self.dir = root / name
        self.sockets = root / f"{name}.s"
        self.settings = settings
        self.postmaster = 0

    def _as_owner(self, *argv: str) -> subprocess.CompletedProcess[str]:
        user = pwd.getpwnam(OWNER)

        def demote() -> None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        return subprocess.run(argv, preexec_fn=demote, capture_output=True, text=True,  # noqa: PLW1509
                              check=True, cwd="/")

    def start(self) -> None:
        user = pwd.getpwnam(OWNER)
        for d in (self.dir, self.sockets):
            d.mkdir(parents=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        self._as_owner(pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres",
                       "--no-sync")
        conf = _COMMON | SIZES["s"] | ARCHIVING | self.settings | {
            "listen_addresses": "''", "unix_socket_directories": f"'{self.sockets}'"}
        with (self.dir / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        self._as_owner(pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.dir / "log"),
                       "-w", "start")
        self.postmaster = int((self.dir / "postmaster.pid").read_text().split()[0])
        self.sql("CREATE DATABASE app")

    def sql(self, query: str, db: str = "postgres") -> str:
        return self._as_owner(pg_bin("psql"), "-h", str(self.sockets), "-U", "postgres", "-d",
                              db, "-Atc", query).stdout.strip()

    def archived(self) -> int:
        return int(self.sql("SELECT archived_count FROM pg_stat_archiver"))

    def stop(self) -> None:
        if self.postmaster:
            self._as_owner(pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clusters", type=int, default=6, help="clusters per candidate")
    ap.add_argument("--seconds", type=float, default=300, help="the measured idle window")
    ap.add_argument("--settle", type=float, default=30, help="idle seconds before it")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pg-idle-"))
    os.chmod(root, 0o755)  # noqa: S103 - the clusters' owner must reach its dirs
    clusters: dict[str, list[Cluster]] = {name: [] for name in CANDIDATES}
    try:
        for i in range(args.clusters):
            for n, (name, settings) in enumerate(CANDIDATES.items()):
                c = Cluster(root, f"c{n}-{i}", settings)
                c.start()
                clusters[name].append(c)
        print(f"{args.clusters} clusters per candidate started; idle for {args.settle:.0f} s")
        time.sleep(args.settle)
        start = {id(c): (cluster_ticks(c.postmaster), c.archived())
                 for cs in clusters.values() for c in cs}
        t0 = time.monotonic()
        forks = {id(c): 0 for cs in clusters.values() for c in cs}
        seen = {id(c): start[id(c)][0][2] for cs in clusters.values() for c in cs}
        print(f"measuring over {args.seconds:.0f} s ...")
        while time.monotonic() - t0 < args.seconds:
            time.sleep(0.2)  # a child that lives shorter than this may be missed: a floor
            for cs in clusters.values():
                for c in cs:
                    now = set(children(c.postmaster))
                    forks[id(c)] += len(now - seen[id(c)])
                    seen[id(c)] = now
        window = time.monotonic() - t0
        rows = []
        for name, cs in clusters.items():
            cpu, woke, wal = [], [], []
            for c in cs:
                (t_start, _, _), a_start = start[id(c)]
                t_end, _, _ = cluster_ticks(c.postmaster)
                cpu.append((t_end - t_start) / TICK / window * 100)
                woke.append(forks[id(c)] / window * 3600)
                wal.append((c.archived() - a_start) / window * 3600)
            mean = sum(cpu) / len(cpu)
            rows.append([name, ", ".join(f"{k}={v}" for k, v in CANDIDATES[name].items()),
                         f"{mean:.4f}", f"{max(cpu):.4f}", f"{sum(woke) / len(woke):.0f}",
                         f"{sum(wal) / len(wal):.1f}", f"{mean * 300 / 2:.2f}"])
        table = md_table(["candidate", "settings", "CPU % of one core, mean per cluster",
                          "max", "processes started / h", "WAL segments archived / h",
                          "300 clusters, % of 2 cores"], rows)
        body = (f"{args.clusters} idle clusters per candidate, size `s` settings, WAL "
                f"archiving on (archive command `true`), side by side over the same "
                f"{window:.0f} s window after {args.settle:.0f} s idle. CPU = ticks of the "
                "postmaster, its live children and the children it reaped in the window.\n\n"
                + table)
        print(body)
        append_report("PostgreSQL idle settings (bench/pg_idle.py)", machine_facts(), body)
    finally:
        for cs in clusters.values():
            for c in cs:
                try:
                    c.stop()
                except subprocess.CalledProcessError as exc:
                    print(f"stopping {c.dir}: {exc.stderr}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
