"""What a platform's cluster uses of the host: its memory and the space left for its WAL.

postgres_exporter sees only what SQL shows; these two the agent reads from the host. Memory
is the proportional set size (PSS: shared pages split among the processes that map them) of
the postmaster and its children, so `shared_buffers` counts once however many backends map
it. Reading `smaps_rollup` walks page tables, so a cluster's figure is kept for `MEMORY_TTL`
seconds: a host of 300 idle clusters reads about ten files a second for it, not a thousand.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from tenantry.agent import pgcluster

MEMORY_TTL = 30.0
# What a cluster of a size is set up to use beside its settings' buffers: the postmaster,
# the background processes and each backend's own code and catalog caches.
BASE_BYTES = 32 * 1024 * 1024
_UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_MEMORY_RE = re.compile(r"^(\d+)(kB|MB|GB|TB)$")


def setting_bytes(text: str) -> int:
    """A PostgreSQL memory setting as written in our size tables ("16MB") in bytes."""
    m = _MEMORY_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a memory setting: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


@functools.cache  # read on every scrape, for every cluster; the sizes are constants
def memory_budget(size: str) -> int:
    """What a cluster of `size` is set up to use: shared_buffers, a work_mem for each
    allowed connection, one maintenance_work_mem, and the base."""
    s = pgcluster.SIZES[size]
    return (setting_bytes(s["shared_buffers"])
            + int(s["max_connections"]) * setting_bytes(s["work_mem"])
            + setting_bytes(s["maintenance_work_mem"]) + BASE_BYTES)


def _pss(pid: int, proc: Path) -> int:
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # gone meanwhile, or not ours to read
    return 0


def tree_pss(pid: int, proc: Path = Path("/proc")) -> int | None:
    """PSS of `pid` and its children (a postmaster's backends and workers are all its
    direct children), or None when `pid` is gone."""
    try:
        children = (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        return None
    own = _pss(pid, proc)
    if own == 0:
        return None
    return own + sum(_pss(int(c), proc) for c in children if c.isdigit())


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on `path`'s filesystem (the cluster's
    owner is not root, so the root reserve does not count)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class MemoryCache:
    """The latest PSS per postmaster, read again once older than `ttl`."""

    def __init__(self, ttl: float = MEMORY_TTL, read: Callable[[int], int | None] = tree_pss,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self._read, self._clock = ttl, read, clock
        self._seen: dict[int, tuple[float, int | None]] = {}

    def of(self, pid: int) -> int | None:
        now = self._clock()
        found = self._seen.get(pid)
        if found is None or now - found[0] >= self.ttl:
            found = (now, self._read(pid))
            self._seen[pid] = found
        return found[1]

    def keep_only(self, pids: set[int]) -> None:
        """Forget postmasters no longer running (a restart gets a new pid)."""
        self._seen = {p: v for p, v in self._seen.items() if p in pids}
