"""Disaster-recovery drills on the host: a write load, the destruction, the count of what
came back (see `DrillTask` in the host contract).

The load writes into the platform's own database, in a schema of its own
(`tenantry_drill.commits`), as the superuser over the Unix socket: it needs nothing of the
app. Each insert is committed on its own (synchronous_commit as configured) and counted as
acknowledged only once COMMIT returned. Ids and times stay in memory: a drill the agent does
not live through is reported as failed, never guessed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import psycopg.errors

from tenantry.agent import pgcluster
from tenantry.core import leftovers
from tenantry.platforms.contract import DrillReport, DrillTask

log = logging.getLogger(__name__)

PAUSE = 0.005  # between two commits of the load
SCHEMA = "tenantry_drill"


@dataclass
class _Drill:
    task_id: str
    acked: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    destroyed_at: float | None = None
    lost: int | None = None
    last_kept_at: float | None = None
    error: str | None = None
    phase: str = "load"


class Drills:
    """The host's drills, one per platform at most, keyed by platform id."""

    def __init__(self) -> None:
        self._drills: dict[str, _Drill] = {}
        self._lock = threading.Lock()

    def _get(self, pid: str, task: DrillTask) -> _Drill:
        with self._lock:
            drill = self._drills.get(pid)
            if drill is None or drill.task_id != task.id:
                if drill is not None:
                    drill.stop.set()
                drill = self._drills[pid] = _Drill(task.id)
            return drill

    def pending(self, pid: str, task: DrillTask | None) -> str | None:
        """What the drill needs done next on this host: "load", "destroy", "verify", None."""
        if task is None:
            return None
        drill = self._drills.get(pid)
        if drill is None or drill.task_id != task.id:
            if task.phase == "verify" and task.acked:
                return "verify"  # the load ran on the lost host, which sent its log
            # An agent that restarted mid-drill knows nothing of the load: it says so.
            return "load" if task.phase == "load" else "lost"
        if task.phase == "load":
            return None if drill.thread is not None else "load"
        if task.phase == "destroy":
            return None if drill.destroyed_at is not None else "destroy"
        return None if drill.phase == "verified" else "verify"

    def report(self, pid: str, task: DrillTask | None) -> DrillReport | None:
        if task is None:
            return None
        drill = self._drills.get(pid)
        if drill is None or drill.task_id != task.id:
            return DrillReport(id=task.id, phase=task.phase, error=None if task.phase == "load"
                               else "the agent restarted during the drill: its log is gone")
        acked = list(drill.acked)
        return DrillReport(
            id=task.id, phase=task.phase, acked=len(acked),
            first_acked_at=acked[0][1] if acked else None,
            last_acked_at=acked[-1][1] if acked else None,
            destroyed_at=drill.destroyed_at, lost=drill.lost,
            last_kept_at=drill.last_kept_at, error=drill.error,
            acked_ranges=ranges(i for i, at in acked if drill.destroyed_at is not None
                                and at <= drill.destroyed_at))

    # ------------------------------------------------------------ the phases

    def load(self, pid: str, task: DrillTask, spec: pgcluster.ClusterSpec, dbname: str) -> None:
        drill = self._get(pid, task)
        if drill.thread is not None:
            return
        with _connect(spec, dbname) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.commits "
                         "(id bigint PRIMARY KEY, at double precision NOT NULL)")
            # The table itself goes to the archive now: the drill measures the load's
            # commits, not whether its own table was archived.
            conn.execute("SELECT pg_switch_wal()")
        drill.thread = threading.Thread(target=self._write, args=(drill, spec, dbname),
                                        name=f"drill-{pid}", daemon=True)
        drill.thread.start()

    @staticmethod
    def _write(drill: _Drill, spec: pgcluster.ClusterSpec, dbname: str) -> None:
        next_id = 1
        while not drill.stop.is_set():
            try:
                with _connect(spec, dbname) as conn:
                    while not drill.stop.is_set():
                        at = time.time()
                        conn.execute(f"INSERT INTO {SCHEMA}.commits VALUES (%s, %s)",
                                     (next_id, at))
                        drill.acked.append((next_id, time.time()))  # COMMIT returned
                        next_id += 1
                        time.sleep(PAUSE)
            except (psycopg.Error, OSError):
                next_id += 1  # an insert whose outcome is unknown is not counted
                drill.stop.wait(0.2)

    def destroy(self, pid: str, task: DrillTask, spec: pgcluster.ClusterSpec,
                spool: Path, platform_dir: Path) -> None:
        """The disk is lost: the load stops, the data directory goes, the postmaster is
        killed without warning, and so is pgBackRest's detached archiver (a lost host takes
        it along; left running, it kept retrying a segment of the deleted pg_wal while
        holding the archive lock, and the recovered cluster's WAL was not archived until it
        gave up: the next drill lost every commit), the local WAL spool goes too."""
        drill = self._get(pid, task)
        drill.stop.set()
        if drill.thread is not None:
            drill.thread.join(10)
        drill.phase = "destroy"
        gone = spec.datadir.with_name(spec.datadir.name + ".destroyed")
        postmaster = _postmaster(spec.datadir)
        shutil.rmtree(gone, ignore_errors=True)
        if spec.datadir.exists():
            os.rename(spec.datadir, gone)  # the running server keeps writing into `gone`
        drill.destroyed_at = time.time()
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        archivers = [x.pid for x in leftovers.find(platform_dir) if x.archiver]
        for archiver in archivers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(archiver, signal.SIGKILL)
        leftovers.wait_gone(archivers, 5)
        shutil.rmtree(gone, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)
        log.warning("drill %s: destroyed the database of %s (postmaster %s killed)", task.id,
                    pid, postmaster)

    def verify(self, pid: str, task: DrillTask, spec: pgcluster.ClusterSpec,
               dbname: str) -> None:
        drill = self._get(pid, task)
        pgcluster.wait_ready(spec, timeout=60)
        with _connect(spec, dbname) as conn:
            try:
                rows = conn.execute(f"SELECT id, at FROM {SCHEMA}.commits").fetchall()
                kept: dict[int, float] = {int(str(i)): float(str(at)) for i, at in rows}
            except psycopg.errors.UndefinedTable:
                kept = {}  # recovered to before the drill's table: nothing came back
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        if drill.acked:  # the load ran here: acknowledged when COMMIT returned
            before = [(i, at) for i, at in drill.acked
                      if drill.destroyed_at is None or at <= drill.destroyed_at]
        else:  # on the lost host, which sent the ids; the time is the row's own
            before = [(i, kept.get(i, 0.0)) for lo, hi in task.acked
                      for i in range(lo, hi + 1)]
        drill.lost = sum(1 for i, _ in before if i not in kept)
        kept_times = [at for i, at in before if i in kept]
        drill.last_kept_at = max(kept_times) if kept_times else None
        drill.phase = "verified"


def ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Increasing ids as (first, last) runs: a load's ids have gaps only where an insert's
    outcome was unknown."""
    found: list[tuple[int, int]] = []
    for i in ids:
        if found and i == found[-1][1] + 1:
            found[-1] = (found[-1][0], i)
        else:
            found.append((i, i))
    return found


def _connect(spec: pgcluster.ClusterSpec, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host=str(spec.socket_dir), port=spec.port, user=pgcluster.SUPERUSER,
                           dbname=dbname, autocommit=True, connect_timeout=3)


def _postmaster(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
