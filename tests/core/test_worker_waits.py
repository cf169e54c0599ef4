"""A job whose step waits on another process gives its worker slot back meanwhile, keeps
its place before its platform's later jobs, and goes on when its wait ends.

At 300 simulated hosts (bench/fleet.py) most of the worker's slots were held by steps
waiting on reports, and a platform's create waited for one of them to end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from tenantry import app as composition
from tenantry.core import jobs
from tenantry.core.db import utcnow
from tenantry.core.jobs import JobKind, StepContext, create_job
from tenantry.core.models import Job, JobStep
from tests.conftest import beside_worker, store_runtime


def test_a_waiting_job_gives_its_slot_back_and_keeps_its_place(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    over = threading.Event()  # what the waiting step waits for
    order: list[str] = []
    runs: list[dt.datetime | None] = []  # the waiting step's `waiting_since`, per run

    def wait(ctx: StepContext) -> None:
        runs.append(ctx.waiting_since)
        order.append(f"wrote {ctx.job_id}")  # a step's write, done again in every run
        assert ctx.may_give_back()
        if not over.is_set():
            jobs.give_back(ctx, ctx.waiting_since or utcnow(), again_in=0.2)
        order.append(f"waited {ctx.job_id}")

    def work(ctx: StepContext) -> None:
        order.append(f"worked {ctx.job_id}")

    waits = JobKind(name="test.wait", steps=(("wait", wait),))
    works = JobKind(name="test.work", steps=(("work", work),))
    monkeypatch.setattr(composition, "job_kinds", lambda: {k.name: k for k in (waits, works)})
    monkeypatch.setattr(composition, "periodic", lambda: [])
    caplog.set_level(logging.INFO, logger="procrastinate")
    with store_runtime("tn-waits-") as runtime:
        with runtime.sessions() as session:
            # one slot: the wait on p1, then work on p2, then work on p1 (after the wait)
            a = create_job(session, kind=waits, isv_id=None, platform_id="p1").id
            b = create_job(session, kind=works, isv_id=None, platform_id="p2").id
            c = create_job(session, kind=works, isv_id=None, platform_id="p1").id
            session.commit()

        def states() -> dict[int, str]:
            with runtime.sessions() as session:
                return {job: state for job, state in session.execute(
                    select(Job.id, Job.state))}

        async def until(done: Callable[[dict[int, str]], bool]) -> dict[int, str]:
            deadline = time.monotonic() + 60
            now = await asyncio.to_thread(states)
            while not done(now) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                now = await asyncio.to_thread(states)
            return now

        async def run() -> tuple[dict[int, str], list[str], dict[int, str]]:
            # b runs in the slot a gave back; c waits for a, its platform's earlier job
            meanwhile = await until(lambda s: s[b] == "succeeded" and len(runs) >= 3)
            seen = list(order)
            over.set()
            ended = await until(lambda s: all(v in ("succeeded", "failed")
                                              for v in s.values()))
            return meanwhile, seen, ended

        meanwhile, seen, ended = beside_worker(runtime, run, concurrency=1)
        with runtime.sessions() as session:
            step = session.scalars(select(JobStep).where(JobStep.job_id == a)).one()
            first_wait, step_started = step.waiting_since, step.started_at

    assert meanwhile == {a: "running", b: "succeeded", c: "queued"}, meanwhile
    assert seen[:2] == [f"wrote {a}", f"worked {b}"], seen
    assert set(seen[2:]) == {f"wrote {a}"}, seen
    assert ended == {a: "succeeded", b: "succeeded", c: "succeeded"}, ended
    assert order[-3:] == [f"wrote {a}", f"waited {a}", f"worked {c}"], order
    # the wait began once: every run after the first knows when (its timeout counts from it)
    assert runs[0] is None and first_wait is not None and step_started is not None
    assert set(runs[1:]) == {first_wait} and step_started <= first_wait
    # giving a slot back is no error, and a job taken up again is no news: procrastinate's
    # lines for them are not logged (a backup waiting hours would write thousands)
    assert not [r for r in caplog.records if "to retry" in r.getMessage()], caplog.text
    starts = [r for r in caplog.records if r.getMessage().startswith("Starting job")]
    assert len(starts) == 3, [r.getMessage() for r in starts]  # a, b and c, once each


def test_a_waiting_job_goes_on_when_woken_not_at_its_timer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that gave its slot back for a minute is taken up again at once when what it
    waits on changes: when `jobs.wake` (a report) makes it due, and when it changed between
    the step's look and the job's return to the queue (the report found the job running,
    and woke nothing: the worker looks again once the job is queued). The worker polls
    only every 30 s here: the wakes come by NOTIFY."""
    from tenantry.cli import worker as worker_module

    monkeypatch.setattr(worker_module, "FETCH_EVERY", 30.0)
    over = threading.Event()
    runs: list[float] = []

    def wait(ctx: StepContext) -> None:
        runs.append(time.monotonic())
        assert ctx.may_give_back()
        if not over.is_set():  # only the first run missed a change
            jobs.give_back(ctx, ctx.waiting_since or utcnow(), again_in=60.0,
                           changed=lambda: len(runs) == 1)

    waits = JobKind(name="test.wait", steps=(("wait", wait),))
    monkeypatch.setattr(composition, "job_kinds", lambda: {waits.name: waits})
    monkeypatch.setattr(composition, "periodic", lambda: [])
    with store_runtime("tn-wake-") as runtime:
        with runtime.sessions() as session:
            a = create_job(session, kind=waits, isv_id=None, platform_id="p1").id
            session.commit()

        def state() -> str:
            with runtime.sessions() as session:
                job = session.get(Job, a)
                assert job is not None
                return job.state

        async def until(done: Callable[[], bool], within: float) -> bool:
            deadline = time.monotonic() + within
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return done()

        async def run() -> tuple[bool, int, bool, float]:
            again = await until(lambda: len(runs) >= 2, 20)  # the look after requeue
            await asyncio.sleep(1.0)
            asleep = len(runs)  # the second run saw no change: it sleeps its minute
            over.set()
            woken_at = time.monotonic()

            def wake() -> None:
                with runtime.sessions() as session:
                    jobs.wake(session, ["p1", "p2"])
                    session.commit()

            await asyncio.to_thread(wake)
            done = await until(lambda: state() == "succeeded", 20)
            return again, asleep, done, runs[-1] - woken_at

        again, asleep, done, took = beside_worker(runtime, run, concurrency=2)
    assert again and asleep == 2 and done, (again, asleep, done, runs)
    assert runs[1] - runs[0] < 10 and took < 10, runs  # not at the 60 s timer, nor the poll
