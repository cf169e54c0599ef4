"""A stop's account of itself: each step's own time, in the order they ran."""

from __future__ import annotations

import re
import time

from tenantry.core.steps import Steps


def test_each_step_counts_from_the_end_of_the_one_before() -> None:
    steps = Steps()
    time.sleep(0.2)
    steps.done("worker")
    steps.done("api")
    time.sleep(0.1)
    steps.done("the agent")
    said = str(steps)
    assert re.fullmatch(r"worker 0\.[23] s, api 0\.0 s, the agent 0\.1 s", said), said
    assert 0.3 <= steps.total() < 1.0
