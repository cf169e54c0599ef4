"""Fixtures for the monitoring stack: free ports, a short private root, processes by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tenantry.agent.services import ProgramSpec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tn-mon-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def launch() -> Iterator[Callable[[ProgramSpec], subprocess.Popen[bytes]]]:
    """Start a ProgramSpec directly; every process started is stopped by its PID at the end,
    even when the test fails."""
    started: list[subprocess.Popen[bytes]] = []

    def run(spec: ProgramSpec) -> subprocess.Popen[bytes]:
        log = open(spec.log_file or "/dev/null", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(list(spec.command), env={**spec.environment, "PATH": "/usr/bin"},
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(proc)
        return proc

    yield run
    for proc in reversed(started):
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
