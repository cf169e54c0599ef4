"""A live worker whose heartbeat is late keeps its running jobs.

On a 2-core machine making its 280th platform, the whole machine stalled for several
seconds: the worker's heartbeat came late, the same worker's requeuer took that for a dead
worker and handed its running jobs back to the queue, and each then ran twice at once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from sqlalchemy import select, text

from tenantry import app as composition
from tenantry.cli import worker as worker_module
from tenantry.core.jobs import JobKind, StepContext, create_job
from tenantry.core.models import Job
from tests.conftest import beside_worker, store_runtime


def test_a_live_worker_whose_heartbeat_is_late_keeps_its_running_job(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    runs: list[float] = []
    release = threading.Event()

    def long(ctx: StepContext) -> None:
        runs.append(time.monotonic())
        release.wait(30)

    kind = JobKind(name="test.long", steps=(("long", long),))
    monkeypatch.setattr(composition, "job_kinds", lambda: {kind.name: kind})
    monkeypatch.setattr(composition, "periodic", lambda: [])
    # its own beat does not come again within the test: late, as after a stall
    monkeypatch.setattr(worker_module, "HEARTBEAT", 120.0)
    caplog.set_level(logging.INFO, logger="tenantry")
    with store_runtime("tn-stall-") as runtime:
        with runtime.sessions() as session:
            job = create_job(session, kind=kind, isv_id=None, platform_id="p1").id
            session.commit()

        def state() -> str:
            with runtime.sessions() as session:
                return session.scalars(select(Job.state).where(Job.id == job)).one()

        def late() -> None:
            with runtime.sessions() as session:
                session.execute(text("UPDATE procrastinate_workers SET last_heartbeat = "
                                     "now() - interval '60 seconds'"))
                session.commit()

        async def run() -> str:
            try:
                deadline = time.monotonic() + 30
                while not runs and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert runs, "the job did not start"
                await asyncio.to_thread(late)
                # the requeuer looks every 2 s: three looks at a heartbeat a minute old
                await asyncio.sleep(3 * 2.0 + 1)
                release.set()
                deadline = time.monotonic() + 30
                while (now := await asyncio.to_thread(state)) == "running" and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return now
            finally:
                release.set()

        ended = beside_worker(runtime, run, concurrency=2)

    assert ended == "succeeded"
    assert len(runs) == 1, f"the job ran {len(runs)} times"
    assert "left by a dead worker" not in caplog.text
