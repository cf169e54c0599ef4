"""bench/alert_flap.py in CI: the whole 30 simulated minutes (it takes seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[2] / "bench" / "alert_flap.py"


def test_a_value_crossing_its_threshold_every_evaluation_notifies_at_most_twice() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--no-report"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "crosses busy only (85/78; busy 80, clear 70) | 0 s | 1 | 2 | 2 | 2 |" in done.stdout
    # the harsher case: one message per change without damping, four with it
    assert "crosses clear too (85/60) | 0 s | 180 | 360 | 4 | 4 |" in done.stdout
