"""The data disk's free space, and a reserve the agent holds on it (issue 11).

A full disk stops every database on the host at once (PostgreSQL cannot write its WAL and
stops), and what fills it is often not ours: a runaway log, a copy an operator left. So the
agent holds a reserve file on the filesystem of its data dir (`disk.reserve`, allocated, not
written: 1 % of the filesystem, between 64 MiB and 1 GiB, or `--disk-reserve`). When the free
space falls below the reserve's size, the reserve is released at once: the databases get
that much room to go on writing while the operator is told (DISK_LOW, and the monitoring's df
alert). Once the free space is three times the reserve again, it is held again (DISK_OK).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tenantry.platforms.contract import DiskReport

log = logging.getLogger("tenantry.agent")

RESERVE_FILE = "disk.reserve"
MIN_RESERVE = 64 << 20
MAX_RESERVE = 1 << 30
REHOLD = 3  # the reserve is held again once free space is this many times its size


def default_reserve(total: int) -> int:
    return max(MIN_RESERVE, min(MAX_RESERVE, total // 100))


@dataclass
class DiskGuard:
    root: Path  # the agent's data dir: the platforms' databases and files are under it
    reserve: int | None = None  # bytes; None: default_reserve of the filesystem's size

    @property
    def reserve_file(self) -> Path:
        return self.root / RESERVE_FILE

    def _held(self) -> int:
        try:
            return self.reserve_file.stat().st_blocks * 512
        except OSError:
            return 0

    def check(self) -> DiskReport:
        """Release or hold the reserve as the free space asks; what the disk looks like."""
        st = os.statvfs(self.root)
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        want = self.reserve if self.reserve is not None else default_reserve(total)
        held = self._held()
        detail = None
        if held and free < want:
            self.reserve_file.unlink(missing_ok=True)
            log.error("free space on %s is down to %d MiB (below the reserve of %d MiB): "
                      "released the reserve so that the databases can go on writing; free "
                      "space on this disk", self.root, free >> 20, held >> 20)
            free += held
            held = 0
        elif not held and free >= REHOLD * want:
            held = self._hold(want)
            if held:
                free -= held
                log.warning("free space on %s is %d MiB: the reserve of %d MiB is held again",
                            self.root, free >> 20, held >> 20)
            else:
                detail = "the reserve could not be allocated"
        if not held and detail is None:
            detail = (f"free space below {REHOLD} times the reserve of {want >> 20} MiB: "
                      "the reserve is released")
        return DiskReport(path=str(self.root), total_bytes=total, free_bytes=free,
                          reserve_bytes=held, low=not held, detail=detail)

    def _hold(self, size: int) -> int:
        tmp = self.reserve_file.with_suffix(".new")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            tmp.rename(self.reserve_file)
        except OSError as exc:
            log.warning("cannot hold a disk reserve of %d MiB on %s: %s", size >> 20,
                        self.root, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return 0
        return self._held()
