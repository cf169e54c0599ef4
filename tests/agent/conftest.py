"""Fixtures for the agent's drivers: short private dirs, free ports, a real supervisord."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tenantry.agent.supervisord import SupervisordManager


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short path under /tmp (unix sockets allow ~107 bytes) that other users may traverse
    (o+x), so per-platform users can reach their own directories below it."""
    path = Path(tempfile.mkdtemp(prefix="tn-", dir="/tmp"))
    os.chmod(path, 0o711)  # noqa: S103 - traversal only, no listing
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def free_port() -> Callable[[], int]:
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    return pick


def wait_for(predicate: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_supervisord(root: Path) -> None:
    """Last-resort cleanup: stop the supervisord our test started, by its pid."""
    manager = SupervisordManager(root)
    try:
        manager.shutdown(timeout=20)
    except Exception:
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / "supervisord.pid").read_text())
            for p in _descendants(pid):
                os.kill(p, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found += [int(entry.name), *_descendants(int(entry.name))]
    return found


@pytest.fixture
def supervisor(short_tmp: Path) -> Iterator[SupervisordManager]:
    manager = SupervisordManager(short_tmp / "sv")
    manager.ensure_started()
    try:
        yield manager
    finally:
        kill_supervisord(short_tmp / "sv")


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., None]:
    return wait_for


@pytest.fixture(name="kill_supervisord")
def kill_supervisord_fixture() -> Callable[[Path], None]:
    return kill_supervisord
