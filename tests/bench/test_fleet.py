"""bench/fleet.py in CI, in a short form (3 simulated hosts of 2 platforms, 20 s): real
enrollments, desired states and heartbeats against a real `tenantry up`, and changes through
the API that reach their hosts and whose jobs end well. How fast is the bench's to report at
1,000 hosts, not this test's to assert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_a_small_fleet_gets_its_changes_and_its_jobs_end_well(tmp_path: Path) -> None:
    out_file = tmp_path / "fleet.json"
    run = run_bench("fleet.py", "--hosts", "3", "--platforms", "2", "--seconds", "20",
                    "--rate", "2", "--json", str(out_file), "--no-report", timeout=840)
    assert run.returncode == 0, run.stdout[-4000:]
    result = json.loads(out_file.read_text())
    assert result["not_arrived"] == 0, result
    assert result["arrivals"].get("create"), result  # creates reached their hosts...
    jobs = result["jobs"]["counts"]
    assert jobs.get("create succeeded"), result  # ...and their jobs, probe included, ended well
    assert not any(k.endswith("failed") for k in jobs), result["jobs"]
    assert result["latency_ms"]["heartbeat (report)"], result
    assert result["control_plane"] > 0
    assert not [e for e in result["errors"] if "HTTP 5" in e and "503" not in e], result
