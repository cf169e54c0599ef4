"""A job a person waits on goes before scheduled upkeep, and a platform's jobs still run in
the order they were queued.

At 1,000 simulated hosts (bench/fleet.py) a platform's create waited seconds for a worker's
slot behind the backup schedule's round of hundreds of jobs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import select, text

from tenantry import app as composition
from tenantry.core.jobs import ASKED, ROUTINE, JobKind, StepContext, create_job
from tenantry.core.models import Job
from tenantry.core.runtime import Runtime
from tests.conftest import beside_worker, store_runtime


def _run_all(runtime: Runtime, ids: list[int]) -> list[str]:
    """Run a one-slot worker until the jobs `ids` ended; their states."""

    def states() -> list[str]:
        with runtime.sessions() as session:
            return list(session.scalars(select(Job.state).where(Job.id.in_(ids))))

    async def run() -> list[str]:
        deadline = time.monotonic() + 90
        now = await asyncio.to_thread(states)
        while time.monotonic() < deadline and \
                not all(state in ("succeeded", "failed") for state in now):
            await asyncio.sleep(0.2)
            now = await asyncio.to_thread(states)
        return now

    return beside_worker(runtime, run, concurrency=1)


def _noting(monkeypatch: pytest.MonkeyPatch, order: list[str]) -> JobKind:
    """The one kind of job the worker knows: its step notes its `name` in `order`."""
    def note(ctx: StepContext) -> None:
        order.append(str(ctx.params["name"]))
        time.sleep(0.05)

    kind = JobKind(name="test.note", steps=(("note", note),))
    monkeypatch.setattr(composition, "job_kinds", lambda: {kind.name: kind})
    monkeypatch.setattr(composition, "periodic", lambda: [])
    return kind


def test_a_job_asked_for_runs_before_the_routine_ones_queued_before_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    kind = _noting(monkeypatch, order)
    with store_runtime("tn-prio-") as runtime:
        with runtime.sessions() as session:
            ids = [create_job(session, kind=kind, isv_id=None, platform_id=f"r{i}",
                              params={"name": f"backup r{i}"}, priority=ROUTINE).id
                   for i in range(12)]
            ids.append(create_job(session, kind=kind, isv_id=None, platform_id="new",
                                  params={"name": "create new"}).id)
            session.commit()
        ended = _run_all(runtime, ids)
    assert ended == ["succeeded"] * 13, ended
    assert order[0] == "create new", order
    assert order[1:] == [f"backup r{i}" for i in range(12)], order  # the rest in turn


def test_a_job_asked_for_behind_its_platforms_routine_one_takes_it_along(
        monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    kind = _noting(monkeypatch, order)
    with store_runtime("tn-prio-") as runtime:
        with runtime.sessions() as session:
            ids = [create_job(session, kind=kind, isv_id=None, platform_id=platform,
                              params={"name": name}, priority=ROUTINE).id
                   for platform, name in [("p", "backup p"), ("r1", "backup r1"),
                                          ("r2", "backup r2"), ("r3", "backup r3")]]
            ids.append(create_job(session, kind=kind, isv_id=None, platform_id="p",
                                  params={"name": "upgrade p"}).id)
            session.commit()
        ended = _run_all(runtime, ids)
    assert ended == ["succeeded"] * 5, ended
    # the upgrade goes after its platform's backup, never before, and both before the rest
    assert order == ["backup p", "upgrade p", "backup r1", "backup r2", "backup r3"], order


def test_two_transactions_queueing_for_one_platform_at_once_keep_its_order() -> None:
    """The scheduler queues a backup while a person asks for an upgrade of the same platform:
    the second waits for the first's commit, so it sees the backup and raises it too."""
    kind = JobKind(name="test.nothing", steps=(("nothing", lambda _: None),))
    with store_runtime("tn-prio-") as runtime:
        first = runtime.sessions()
        backup = create_job(first, kind=kind, isv_id=None, platform_id="p",
                            priority=ROUTINE).id
        asked: list[int] = []

        def ask() -> None:
            with runtime.sessions() as session:
                asked.append(create_job(session, kind=kind, isv_id=None, platform_id="p").id)
                session.commit()

        other = threading.Thread(target=ask)
        other.start()
        other.join(1.0)
        waited = other.is_alive()  # the scheduler's transaction is slow to commit, on purpose
        first.commit()
        first.close()
        other.join(30)
        with runtime.sessions() as session:
            priorities = dict(session.execute(text(
                "SELECT (args->>'job_id')::int, priority FROM procrastinate_jobs"
                " WHERE lock = 'platform:p'")).all())
    assert waited
    assert priorities == {backup: ASKED, asked[0]: ASKED}, priorities


def test_a_job_asked_for_does_not_wait_for_its_platforms_routine_one_set_to_start_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The backup schedule spreads a round's jobs over the round; an earlier job of the
    platform's lock holds its later ones even before it is due (procrastinate's order), so
    an upgrade asked for behind one set to start 2 minutes later would wait 2 minutes."""
    order: list[str] = []
    kind = _noting(monkeypatch, order)
    with store_runtime("tn-prio-") as runtime:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        with runtime.sessions() as session:
            backup_p, backup_r = [
                create_job(session, kind=kind, isv_id=None, platform_id=platform,
                           params={"name": f"backup {platform}"}, priority=ROUTINE,
                           start_at=later).id for platform in ("p", "r")]
            upgrade = create_job(session, kind=kind, isv_id=None, platform_id="p",
                                 params={"name": "upgrade p"}).id
            session.commit()
        ended = _run_all(runtime, [backup_p, upgrade])
        with runtime.sessions() as session:
            other = session.execute(text(
                "SELECT j.state, p.scheduled_at FROM jobs AS j JOIN procrastinate_jobs AS p"
                " ON (p.args->>'job_id')::bigint = j.id WHERE j.id = :id"),
                {"id": backup_r}).one()
    # the upgrade at once, after its platform's backup, which it made due
    assert ended == ["succeeded"] * 2 and order == ["backup p", "upgrade p"], (ended, order)
    assert tuple(other) == ("queued", later), other  # the other platform's keeps its time
