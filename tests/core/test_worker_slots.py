"""The worker runs as many jobs at once as it has slots.

A job mostly waits on a host's report; a worker whose slots are not really there queues a
platform's create behind other jobs' waits (seen at 300 simulated hosts, bench/fleet.py).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from sqlalchemy import select

from tenantry import app as composition
from tenantry.core.jobs import JobKind, StepContext, create_job
from tenantry.core.models import Job
from tests.conftest import beside_worker, store_runtime


def test_every_slot_of_the_worker_runs_a_job_at_the_same_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # More slots than the default thread pool of this machine has threads (cores + 4), so
    # that the test means the same on a machine with more cores.
    slots = (os.cpu_count() or 1) + 8
    meeting = threading.Barrier(slots, timeout=30)

    def meet(_: StepContext) -> None:
        meeting.wait()  # returns only once every slot's job is in this step

    kind = JobKind(name="test.meet", steps=(("meet", meet),))
    monkeypatch.setattr(composition, "job_kinds", lambda: {kind.name: kind})
    monkeypatch.setattr(composition, "periodic", lambda: [])
    with store_runtime("tn-slots-") as runtime:
        with runtime.sessions() as session:
            ids = [create_job(session, kind=kind, isv_id=None, platform_id=None).id
                   for _ in range(slots)]
            session.commit()

        def states() -> list[str]:
            with runtime.sessions() as session:
                return list(session.scalars(select(Job.state).where(Job.id.in_(ids))))

        async def run() -> list[str]:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                now = await asyncio.to_thread(states)
                if all(state in ("succeeded", "failed") for state in now):
                    return now
                await asyncio.sleep(0.3)
            return now

        ended = beside_worker(runtime, run, concurrency=slots)
    assert ended == ["succeeded"] * slots, ended
