"""`up --api-processes N` runs N API processes on the one `--listen` address: `up` binds the
socket and each process accepts from it. One process dying does not stop the API; while all
of them restart, a new connection waits in the socket's queue instead of being refused.

Each restart is made slow on purpose (TENANTRY_TEST_DELAYS api.start), so that what is
asked during it is asked while the process is really not serving."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ControlPlaneProcess, children_of, running_plane, wait_until

pytestmark = pytest.mark.slow

RESTART = 4.0  # s each API process holds before it serves


def apis(cp: ControlPlaneProcess) -> list[int]:
    assert cp.process is not None
    found = []
    for pid in children_of(cp.process.pid):
        try:
            if b"serve-api" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return sorted(found)


def health(cp: ControlPlaneProcess, timeout: float) -> int:
    """A request on a connection of its own (a new agent, a new browser)."""
    return httpx.get(f"{cp.url}/api/v1/health", timeout=timeout).status_code


@pytest.mark.timeout(300)
def test_the_api_keeps_answering_while_one_of_its_processes_restarts_and_queues_while_all_do(
        ) -> None:
    with running_plane("--api-processes", "2",
                       env={"TENANTRY_TEST_DELAYS": f"api.start={RESTART}"}) as cp:
        first = apis(cp)
        assert len(first) == 2, first
        assert all(health(cp, 5) == 200 for _ in range(10))

        os.kill(first[0], signal.SIGKILL)
        killed_at = time.monotonic()
        answered = []
        while time.monotonic() - killed_at < RESTART - 1:
            asked = time.monotonic()
            assert health(cp, 1.0) == 200
            answered.append(time.monotonic() - asked)
        assert len(answered) >= 10 and max(answered) < 1.0, answered
        restarted = wait_until(lambda: len(apis(cp)) == 2 and first[0] not in apis(cp), 30,
                               "the killed API process started again")
        assert restarted < RESTART, "the requests above were made before it served again"

        both = apis(cp)
        for pid in both:
            os.kill(pid, signal.SIGKILL)
        asked = time.monotonic()
        assert health(cp, 60) == 200, "waited in the queue, not refused"
        waited = time.monotonic() - asked
        assert waited >= RESTART - 1, f"answered after {waited:.1f} s: before any restart?"
        assert not set(apis(cp)) & set(both)

        assert [h["state"] for h in cp.cli_json("host", "list")] == ["online"]
