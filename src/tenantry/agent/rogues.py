"""Rogue processes: busy or big processes on a platform host that tenantry does not know.

A process belongs when it is in a known tree (the agent and what it runs, its supervisord
and every platform program, cluster, exporter and the ingress under it), runs as a known
Unix user (a platform's `tp-*` user, tenantry's service users), or is tenantry itself (the
control plane's API and worker, by command line, and what they run). Kernel threads never
count. Anything else that uses more than a CPU share (averaged since the previous scan) or a
resident size is a rogue: a runaway cron job, a forgotten shell, a miner.

One scan reads /proc/PID/stat of every process (one read each); owners, command lines and
ancestry are read only for the few over a threshold.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PF_KTHREAD = 0x00200000  # include/linux/sched.h
KTHREADD = 2
MIN_INTERVAL = 1.0  # a scan sooner than this after the last one answers the last result


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that a scan needs."""

    pid: int
    comm: str
    ppid: int
    flags: int
    cpu_ticks: int  # utime + stime
    start_ticks: int  # since boot
    rss_pages: int

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD) or KTHREADD in (self.pid, self.ppid)


def parse_stat(text: str) -> ProcStat:
    """`comm` may hold spaces and parentheses: it ends at the last ')'."""
    head, _, tail = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    f = tail.split()  # f[0] is field 3 (state) of proc(5)
    return ProcStat(pid=int(pid), comm=comm, ppid=int(f[1]), flags=int(f[6]),
                    cpu_ticks=int(f[11]) + int(f[12]), start_ticks=int(f[19]),
                    rss_pages=int(f[21]))


class ProcSource(Protocol):
    """Where a scan reads processes: /proc, or a fake in tests."""

    clock_ticks: int
    page_size: int

    def pids(self) -> list[int]: ...

    def stat(self, pid: int) -> str: ...

    def uid(self, pid: int) -> int: ...

    def cmdline(self, pid: int) -> list[str]: ...

    def uptime(self) -> float: ...


class Proc:
    def __init__(self, root: Path = Path("/proc")) -> None:
        self.root = root
        self._root = str(root)
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def pids(self) -> list[int]:
        return [int(name) for name in os.listdir(self._root) if name.isdigit()]

    def stat(self, pid: int) -> str:
        """Read for every process on every scrape: plain os calls halve the scan's time."""
        fd = os.open(f"{self._root}/{pid}/stat", os.O_RDONLY)
        try:
            return os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)

    def uid(self, pid: int) -> int:
        return os.stat(self.root / str(pid)).st_uid

    def cmdline(self, pid: int) -> list[str]:
        with open(self.root / str(pid) / "cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]

    def uptime(self) -> float:
        with open(self.root / "uptime") as f:
            return float(f.read().split()[0])


@dataclass(frozen=True)
class Known:
    """What belongs on this host: whole process trees, and Unix users."""

    roots: frozenset[int] = frozenset()
    uids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Thresholds:
    cpu_ratio: float = 0.5  # of one core
    rss_bytes: int = 1 << 30


@dataclass(frozen=True)
class Rogue:
    pid: int
    comm: str
    cpu_ratio: float
    rss_bytes: int


@dataclass(frozen=True)
class RogueReport:
    count: int = 0
    top: tuple[Rogue, ...] = ()


def is_tenantry(argv: list[str]) -> bool:
    """The `tenantry` command (up, api, worker, agent) or `python -m tenantry...`."""
    if any(os.path.basename(a) == "tenantry" for a in argv[:2]):
        return True
    return any(a == "-m" and b.split(".")[0] == "tenantry" for a, b in zip(argv, argv[1:],
                                                                             strict=False))


class RogueScanner:
    TOP = 5

    def __init__(self, proc: ProcSource | None = None, thresholds: Thresholds = Thresholds(),
                 clock: Callable[[], float] = time.monotonic, *,
                 every: float = MIN_INTERVAL) -> None:
        self.proc: ProcSource = proc or Proc()
        self.every = max(every, MIN_INTERVAL)  # a scan sooner answers the last result
        self.thresholds = thresholds
        self._clock = clock
        self._lock = threading.Lock()
        self._ticks: dict[tuple[int, int], int] = {}  # (pid, start) → cpu ticks at `_at`
        self._at: float | None = None
        self._last = RogueReport()

    def scan(self, known: Known) -> RogueReport:
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self.every:
                return self._last
            stats = self._read()
            over = self._over_thresholds(stats, now)
            rogues = [r for r in over if not self._belongs(r.pid, stats, known)]
            rogues.sort(key=self._score, reverse=True)
            self._last = RogueReport(count=len(rogues), top=tuple(rogues[:self.TOP]))
            return self._last

    def _read(self) -> dict[int, ProcStat]:
        stats = {}
        for pid in self.proc.pids():
            try:
                stats[pid] = parse_stat(self.proc.stat(pid))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        return stats

    def _over_thresholds(self, stats: dict[int, ProcStat], now: float) -> list[Rogue]:
        """CPU share since the last scan; for a process new since then, since it started."""
        hz, limit = self.proc.clock_ticks, self.thresholds
        uptime = self.proc.uptime()
        ticks, over = {}, []
        for st in stats.values():
            key = (st.pid, st.start_ticks)
            ticks[key] = st.cpu_ticks
            before = self._ticks.get(key)
            if before is not None and self._at is not None:
                ratio = (st.cpu_ticks - before) / hz / (now - self._at)
            else:
                ratio = st.cpu_ticks / hz / max(uptime - st.start_ticks / hz, MIN_INTERVAL)
            rss = st.rss_pages * self.proc.page_size
            if (ratio >= limit.cpu_ratio or rss >= limit.rss_bytes) and not st.kernel_thread:
                over.append(Rogue(st.pid, st.comm, round(ratio, 4), rss))
        self._ticks, self._at = ticks, now
        return over

    def _belongs(self, pid: int, stats: dict[int, ProcStat], known: Known) -> bool:
        try:
            if self.proc.uid(pid) in known.uids:
                return True
        except OSError:
            return True  # gone: not a rogue any more
        line = [pid]  # the process and its ancestors
        while (parent := stats[line[-1]].ppid) in stats and parent not in line:
            line.append(parent)
        if known.roots.intersection(line):
            return True
        for p in line:
            try:
                if is_tenantry(self.proc.cmdline(p)):
                    return True
            except OSError:
                continue
        return False

    def _score(self, rogue: Rogue) -> float:
        """How far over a threshold: the worst first."""
        return max(rogue.cpu_ratio / self.thresholds.cpu_ratio,
                   rogue.rss_bytes / self.thresholds.rss_bytes)
