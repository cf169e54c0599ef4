"""A process that runs but does not answer (stopped by SIGSTOP, wedged) is as good as dead to
the people it serves, and its supervisor does not see it: it still runs. These say when to
treat it as dead, so that the ordinary restart path takes over (issue 11).

- `Silence` counts how long something has not answered, in a row;
- a heartbeat file, touched every BEAT seconds by a thread of the process (`up` gives its
  children the file through HEARTBEAT_ENV), tells a frozen process from a busy one: a busy
  process still runs its threads, a stopped or wedged one does not;
- a process stopped by a signal (state T in /proc) is frozen for certain, and costs one read
  of /proc to see; `Stopped` keeps how long each has been;
- `kill_tree` ends a hung process with what it started (a postmaster's backends hold its
  shared memory, and a new one cannot start while they live).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from tenantry.core import leftovers

HEARTBEAT_ENV = "TENANTRY_HEARTBEAT_FILE"
BEAT = 1.0


class Silence:
    """How long something has not answered, in a row; `observe` says whether that is `after`
    seconds or more."""

    def __init__(self, after: float) -> None:
        self.after = after
        self._since: float | None = None

    def observe(self, answered: bool, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if answered:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self.after

    def silent_for(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return 0.0 if self._since is None else now - self._since

    def reset(self) -> None:
        self._since = None


def start_heartbeat(path: Path | None = None, every: float = BEAT) -> threading.Thread | None:
    """Touch `path` (or the file named by HEARTBEAT_ENV) every `every` seconds from a thread
    of its own, for as long as the process lives; None when there is no file to touch."""
    if path is None:
        named = os.environ.get(HEARTBEAT_ENV)
        if not named:
            return None
        path = Path(named)

    def beat() -> None:
        while True:
            with contextlib.suppress(OSError):
                path.touch()
            time.sleep(every)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread


def heartbeat_age(path: Path) -> float | None:
    """Seconds since the heartbeat file was last touched; None when there is none."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return None


def stopped(pid: int) -> bool:
    """Stopped by a signal: state T (see leftovers.stopped)."""
    return leftovers.stopped(pid)


def cpu_ticks(pid: int) -> int | None:
    """CPU time it has used (user and system, in clock ticks); None when it is gone."""
    fields = leftovers.stat_fields(pid)
    return None if fields is None else int(fields[11]) + int(fields[12])


class Stopped:
    """Which processes have been stopped by a signal (state T) for longer than their limit,
    in a row; looked at every time `look` is called (cheap: one /proc read each)."""

    def __init__(self) -> None:
        self._since: dict[int, float] = {}

    def look(self, limits: dict[int, float], now: float | None = None) -> list[tuple[int, float]]:
        """(pid, seconds stopped) of those of `limits` stopped for their limit or longer."""
        now = time.monotonic() if now is None else now
        found = []
        for pid, limit in limits.items():
            if not stopped(pid):
                self._since.pop(pid, None)
                continue
            since = self._since.setdefault(pid, now)
            if now - since >= limit:
                found.append((pid, now - since))
        for pid in set(self._since) - set(limits):
            del self._since[pid]
        return found

    def forget(self, pid: int) -> None:
        self._since.pop(pid, None)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants (its whole process group when it leads one). A
    stopped process dies of SIGKILL too; it needs no SIGCONT."""
    tree = leftovers.tree_of(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
