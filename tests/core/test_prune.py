"""Retention of jobs and events: what is older than the settings goes, in batches; each
platform's last job of each kind, unfinished jobs and everything recent stay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select

from tenantry.core import jobs
from tenantry.core.db import utcnow
from tenantry.core.models import Event, Job, JobStep
from tenantry.core.runtime import Runtime
from tests.conftest import store_runtime


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with store_runtime("tnprune-") as rt:
        yield rt


def add_job(runtime: Runtime, platform: str, kind: str, state: str, days_ago: float) -> int:
    when = utcnow() - dt.timedelta(days=days_ago)
    with runtime.sessions() as session:
        job = Job(kind=kind, state=state, platform_id=platform, created_at=when,
                  ended_at=when if state in ("succeeded", "failed") else None,
                  steps=[JobStep(position=0, name="one", state="done")])
        session.add(job)
        session.commit()
        return job.id


def add_event(runtime: Runtime, days_ago: float) -> int:
    with runtime.sessions() as session:
        event = Event(kind="TEST", message="m", time=utcnow() - dt.timedelta(days=days_ago))
        session.add(event)
        session.commit()
        return event.id


def remaining(runtime: Runtime) -> tuple[set[int], set[int], set[int]]:
    with runtime.sessions() as session:
        return (set(session.scalars(select(Job.id))), set(session.scalars(select(Event.id))),
                set(session.scalars(select(JobStep.job_id))))


@pytest.fixture(autouse=True)
def empty(runtime: Runtime) -> Iterator[None]:
    yield
    with runtime.sessions() as session:
        session.execute(delete(Job))
        session.execute(delete(Event))
        session.commit()


def test_old_ended_jobs_and_old_events_go_the_rest_stays(runtime: Runtime) -> None:
    runtime.settings.job_retention_days = 90
    runtime.settings.event_retention_days = 30
    old_done = add_job(runtime, "p1", "backup", "succeeded", 200)
    old_failed = add_job(runtime, "p1", "backup", "failed", 100)
    last_backup = add_job(runtime, "p1", "backup", "succeeded", 95)  # p1's last backup
    only_create = add_job(runtime, "p1", "create", "succeeded", 300)  # p1's only create
    still_running = add_job(runtime, "p2", "backup", "running", 120)
    recent = add_job(runtime, "p2", "backup", "succeeded", 1)
    other_platform = add_job(runtime, "p3", "backup", "succeeded", 150)
    old_event, new_event = add_event(runtime, 31), add_event(runtime, 29)

    assert jobs.prune_history(runtime) == (2, 1)
    kept_jobs, kept_events, with_steps = remaining(runtime)
    assert kept_jobs == {last_backup, only_create, still_running, recent, other_platform}
    assert old_done not in kept_jobs and old_failed not in kept_jobs
    assert with_steps == kept_jobs  # the steps went with their jobs
    assert kept_events == {new_event} and old_event not in kept_events
    assert jobs.prune_history(runtime) == (0, 0)


def test_a_backlog_larger_than_a_batch_goes_in_several(runtime: Runtime,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.settings.job_retention_days = 90
    runtime.settings.event_retention_days = 90
    monkeypatch.setattr(jobs, "PRUNE_BATCH", 3)
    for _ in range(8):
        add_job(runtime, "p1", "backup", "succeeded", 100)
        add_event(runtime, 100)
    last = add_job(runtime, "p1", "backup", "succeeded", 100)
    assert jobs.prune_history(runtime) == (8, 8)
    assert remaining(runtime)[0] == {last}


def test_zero_keeps_everything(runtime: Runtime) -> None:
    runtime.settings.job_retention_days = 0
    runtime.settings.event_retention_days = 0
    first = add_job(runtime, "p1", "backup", "succeeded", 1000)
    add_job(runtime, "p1", "backup", "succeeded", 999)
    add_event(runtime, 1000)
    assert jobs.prune_history(runtime) == (0, 0)
    assert first in remaining(runtime)[0]


@pytest.mark.parametrize("name", ["TENANTRY_JOB_RETENTION_DAYS", "TENANTRY_EVENT_RETENTION_DAYS"])
def test_a_retention_out_of_range_is_refused_naming_the_setting(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from tenantry.core.config import Settings

    monkeypatch.setenv(name, "-1")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert name.removeprefix("TENANTRY_").lower() in str(refused.value)
    assert "between 0 and 36500" in str(refused.value)


def test_the_queues_rows_of_ended_jobs_go_after_a_day_with_their_events(
        runtime: Runtime) -> None:
    """procrastinate's rows are not the record (`jobs` is): a job that gave its worker slot
    back while it waited left two queue events per time it was taken up again, and a
    backup waiting hours leaves thousands. They go a day after the job ended; the job's
    own row stays for the retention."""
    import asyncio

    from sqlalchemy import text

    from tenantry.cli.worker import make_app, prune_queue

    kind = jobs.JobKind(name="test.prune", steps=(("one", lambda ctx: None),))
    with runtime.sessions() as session:
        old, recent, running = (jobs.create_job(session, kind=kind, isv_id=None,
                                                platform_id=f"pq{i}").id for i in range(3))
        session.commit()
    queue_id = {}
    with runtime.sessions() as session:
        for job in (old, recent, running):
            queue_id[job] = session.execute(text(
                "SELECT id FROM procrastinate_jobs WHERE (args->>'job_id')::int = :j"),
                {"j": job}).scalar_one()
        for job, status in ((old, "succeeded"), (recent, "succeeded"), (running, "doing")):
            for _ in range(3):  # taken up three times, as a job that waited
                session.execute(text("UPDATE procrastinate_jobs SET status = 'doing' "
                                     "WHERE id = :q"), {"q": queue_id[job]})
                session.execute(text("UPDATE procrastinate_jobs SET status = 'todo' "
                                     "WHERE id = :q"), {"q": queue_id[job]})
            session.execute(text("UPDATE procrastinate_jobs SET status = 'doing' "
                                 "WHERE id = :q"), {"q": queue_id[job]})
            if status == "succeeded":
                session.execute(text("UPDATE procrastinate_jobs SET status = 'succeeded' "
                                     "WHERE id = :q"), {"q": queue_id[job]})
        # the old job's events (its last one included) are from two days ago; and the
        # running job's from two days ago too: it is not ended, so it stays
        session.execute(text("UPDATE procrastinate_events SET at = now() - interval '2 days'"
                             " WHERE job_id IN (:a, :b)"),
                        {"a": queue_id[old], "b": queue_id[running]})
        session.commit()

    def left() -> dict[int, int]:
        with runtime.sessions() as session:
            return {job: session.execute(text(
                "SELECT count(*) FROM procrastinate_jobs j JOIN procrastinate_events e "
                "ON e.job_id = j.id WHERE j.id = :q"), {"q": queue_id[job]}).scalar_one()
                for job in (old, recent, running)}

    before = left()
    assert before[old] == before[recent] >= 8, before  # deferred, then started/retried...

    async def prune() -> None:
        app = make_app(runtime)
        async with app.open_async():
            await prune_queue(app)

    asyncio.run(prune())
    after = left()
    assert after == {old: 0, recent: before[recent], running: before[running]}, after
    with runtime.sessions() as session:
        assert session.get(Job, old) is not None  # tenantry's record stays
