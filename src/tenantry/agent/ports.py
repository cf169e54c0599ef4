"""Which TCP ports are listening on this host, read from /proc (no extra tools)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

_LISTEN = "0A"


def listening_ports(proc: Path = Path("/proc/net")) -> set[int]:
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        path = proc / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


_recent: tuple[float, frozenset[int]] = (-1e9, frozenset())
_recent_lock = threading.Lock()


def listening_now(max_age: float = 0.5) -> frozenset[int]:
    """`listening_ports`, read at most once per `max_age` s for every platform's check: the
    kernel writes /proc/net/tcp walking every socket of the machine."""
    global _recent
    with _recent_lock:
        at, ports = _recent
        if time.monotonic() - at >= max_age:
            ports = frozenset(listening_ports())
            _recent = (time.monotonic(), ports)
        return ports


def busy_ports(low: int, high: int, ours: set[int]) -> list[int]:
    """Ports of our range that something other than our platforms holds."""
    return sorted(p for p in listening_ports() if low <= p <= high and p not in ours)
