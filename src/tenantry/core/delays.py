"""Test-only start-up delays: make one side of a wait slow on purpose.

Code that waits on another process must wait on a condition, never on its usual timing.
Tests prove that by slowing the other side down: `TENANTRY_TEST_DELAYS` names points in
the start-up of tenantry's processes and how many seconds to hold each, for example
`TENANTRY_TEST_DELAYS="agent.enroll=8,api.start=5"`. Unset (always, outside tests) it
costs nothing.
"""

from __future__ import annotations

import os
import threading
import time

from tenantry.core.errors import InvalidInput

VARIABLE = "TENANTRY_TEST_DELAYS"
POINTS = {
    "api.start": "the API process, before it listens",
    "worker.start": "the job worker, before it takes jobs",
    "agent.enroll": "the host agent, before it enrolls with the control plane",
    "agent.services": "the host agent, before it starts or adopts its service manager",
    "up.store_restart": "`up`, before it starts its crashed PostgreSQL again",
}


def configured(value: str | None = None) -> dict[str, float]:
    """The delays asked for, by point; refuses unknown points and bad numbers by name."""
    value = os.environ.get(VARIABLE, "") if value is None else value
    delays: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, sep, seconds = item.partition("=")
        if point not in POINTS:
            raise InvalidInput(f"{VARIABLE}: unknown point {point!r} (known: "
                               f"{', '.join(sorted(POINTS))})", field=VARIABLE)
        try:
            delays[point] = float(seconds) if sep else -1.0
        except ValueError:
            delays[point] = -1.0
        if not 0 <= delays[point] <= 3600:
            raise InvalidInput(f"{VARIABLE}: {item!r} is not POINT=SECONDS (0 to 3600)",
                               field=VARIABLE)
    return delays


def delay(point: str, stopping: threading.Event | None = None) -> None:
    """Hold here as long as the test asked; a stop request ends the hold at once."""
    assert point in POINTS, point
    seconds = configured().get(point, 0.0)
    if seconds <= 0:
        return
    if stopping is not None:
        stopping.wait(seconds)
    else:
        time.sleep(seconds)
