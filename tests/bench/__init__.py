
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run bench/SCRIPT with ARGS to its end, its output kept; past `timeout` it gets SIGTERM
    (each bench then undoes its faults and stops its plane) and the test fails."""
    bench = subprocess.Popen([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = bench.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=120)
        pytest.fail(f"bench/{script} did not finish within {timeout:.0f} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(bench.args, bench.returncode, out)
