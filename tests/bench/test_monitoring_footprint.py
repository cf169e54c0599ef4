"""bench/monitoring_footprint.py --short: a real `tenantry up` with 2 platforms, 20 s of
samples; every monitoring program is found and the figures it prints are sane."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

STACK = ("prometheus", "alertmanager", "blackbox_exporter", "node_exporter",
         "postgres_exporter")


def run_short(timeout: float = 480) -> tuple[int, str, dict[str, Any]]:
    """Run the bench; on time-out SIGTERM it (so it stops its control plane), then fail."""
    bench = subprocess.Popen([sys.executable, str(REPO / "bench" / "monitoring_footprint.py"),
                              "--short"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = bench.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=300)
        pytest.fail(f"bench did not finish within {timeout:.0f} s:\n{out[-4000:]}")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-4000:]
    return bench.returncode, out, json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.timeout(600)
def test_short_run_finds_every_program_and_measures_them() -> None:
    code, out, result = run_short()
    assert code == 0, out[-4000:]
    assert result["platforms"] == 2 and result["seconds"] >= 15
    programs = result["programs"]
    for name in STACK:
        assert programs[name]["pids"], f"{name} not found"
        assert programs[name]["pss_mib"] > 0, name
    # scraped or probing every 3-5 s, so busy in any 20 s
    for name in ("prometheus", "blackbox_exporter", "node_exporter", "postgres_exporter"):
        assert programs[name]["cpu_seconds"] > 0, name
    for name in ("agent", "api", "worker"):
        assert programs[name]["pids"] and programs[name]["cpu_seconds"] > 0, name
    assert 0 < result["stack_cpu_pct_core"] < 100 * result["cores"]
    assert 0 < result["stack_pss_mib"] < 2048
    assert 5 < result["platform_pss_mib_mean"] < 500
    assert result["exporter_session_pss_mib_mean"] > 0
    assert result["tsdb_bytes"] > 0 and result["head_series"] > 0
    assert result["samples_per_s"] > 0
    # with Prometheus stopped, it and the exporters it scrapes idle
    quiet = result["quiet_cpu_pct_core"]
    assert quiet["blackbox_exporter"] < programs["blackbox_exporter"]["cpu_pct_core"]
