"""bench/alert_latency.py --short in CI: a real `tenantry up`, each fault once (a hung app,
a database kept down, a silent host agent), and each trial told exactly once by email and
by SMS, its recovery too. Latency targets are reported by the bench, not asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import run_bench

pytestmark = pytest.mark.slow


@pytest.mark.timeout(660)
def test_each_fault_is_told_once_by_email_and_sms_and_so_is_its_recovery(
        tmp_path: Path) -> None:
    summary = tmp_path / "trials.json"
    bench = run_bench("alert_latency.py", "--short", "--json", str(summary), timeout=600)
    out = bench.stdout
    assert bench.returncode == 0, out[-4000:]
    trials = json.loads(summary.read_text())["trials"]
    assert sorted({t["kind"] for t in trials}) == ["agent", "db", "hang"]
    for t in trials:
        assert t["ok"], t
        assert t["counts"] == {"firing email": 1, "firing sms": 1, "resolved email": 1,
                               "resolved sms": 1}, t
        assert all(t[k] is not None for k in ("email", "sms", "rec_email", "rec_sms")), t
