"""Durable jobs: a `jobs` row with ordered steps, run by a procrastinate task.

A job is queued in the same transaction that records it (we call procrastinate's own
defer function in SQL), so a crash can never leave a recorded job that nobody will run.
The runner executes the steps in order and records each one; a step that was `running`
when a process died is simply run again, so every step must be idempotent.

A worker that is asked to stop (`stopping`) lets its running jobs pause rather than finish:
each stops before its next step, or in a wait (`pause`, `sleep`), by raising `Paused`, and
is taken up again from that step by the next worker. A stop therefore takes a moment, not
as long as the longest running job.

A step that waits on another process (a host's report) gives its worker slot back when the
wait lasts (`Waiting`): the job goes back to the queue, keeps its place before its
platform's later jobs (procrastinate's lock), and its step runs again from its start when
what it waits on changes (`wake`, from the host's report), as after a pause, or after a
timer as a net. So a worker's slots run jobs that work, not jobs that wait.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Delete, TextClause, delete, func, select, text
from sqlalchemy.orm import Session

from tenantry.core.db import utcnow
from tenantry.core.errors import TenantryError
from tenantry.core.models import Event, Job, JobStep
from tenantry.core.runtime import Runtime

log = logging.getLogger(__name__)

QUEUE = "jobs"
TASK = "tenantry.run_job"

stopping = threading.Event()  # set by the worker when a stop begins


class Paused(Exception):  # noqa: N818 (not an error: the job goes on at the next start)
    """The worker is stopping: the job stops here and its current step runs again, from its
    start, when a worker takes the job up again."""


class Waiting(Exception):  # noqa: N818 (not an error: the job goes on a moment later)
    """The step waits on another process and gives its worker slot back meanwhile: the job
    goes back to the queue and its current step runs again, from its start, when `wake`
    makes it due or after `again_in` seconds. Raised by `give_back`.

    `changed`, when given, tells whether what the step waits on changed since it last
    looked: the worker asks it once the job is back in the queue, and wakes the job if so
    (a change that came between the look and then found the job still running, and woke
    nothing)."""

    def __init__(self, again_in: float, changed: Callable[[], bool] | None = None) -> None:
        super().__init__(f"waiting; the step runs again in {again_in:.1f} s")
        self.again_in = again_in
        self.changed = changed


def pause() -> None:
    """Raise `Paused` if the worker is stopping: for steps that wait or loop."""
    if stopping.is_set():
        raise Paused()


def sleep(seconds: float) -> None:
    """`time.sleep` that a stop cuts short (with `Paused`)."""
    if stopping.wait(seconds):
        raise Paused()


@dataclass
class StepContext:
    runtime: Runtime
    job_id: int
    platform_id: str | None
    params: dict[str, object]
    # the running step's row: None in a job's success or failure handler, which may wait
    # but never give their slot back (they are not run again)
    step_id: int | None = None
    # when the step's wait began, if an earlier run of the step gave its slot back
    waiting_since: dt.datetime | None = None
    # a wait of this run of the step has begun: only the first wait of a step may give its
    # slot back, since a run again redoes the step's writes up to that wait and no further
    # (a later write could be undone by an earlier one: apps started, then stopped again)
    waited: bool = False

    def may_give_back(self) -> bool:
        """Whether the wait beginning now may give the slot back (and mark that one began)."""
        first = self.step_id is not None and not self.waited
        self.waited = True
        return first


def give_back(ctx: StepContext, since: dt.datetime, again_in: float,
              changed: Callable[[], bool] | None = None) -> None:
    """Give the worker slot back until a `wake`, or `again_in` seconds: keep when the wait
    began (`since`) with the step, and raise `Waiting`. Only for a wait
    `ctx.may_give_back` allowed."""
    assert ctx.step_id is not None
    if ctx.waiting_since is None:
        with ctx.runtime.sessions() as session:
            step = session.get(JobStep, ctx.step_id)
            assert step is not None
            step.waiting_since = since
            session.commit()
        ctx.waiting_since = since
    raise Waiting(again_in, changed)


# Make a job that gave its slot back due now, and tell the workers as procrastinate does
# for a new job (its NOTIFY goes at the caller's commit). Only a job that waits for a time
# is made due: one that is running, or already due, is left as it is.
def _waking(which: str) -> TextClause:
    return text("WITH woken AS (UPDATE procrastinate_jobs SET scheduled_at = now()"
                f" WHERE status = 'todo' AND {which} AND scheduled_at > now()"
                " RETURNING id, queue_name)"
                " SELECT count(pg_notify('procrastinate_queue_v1#' || queue_name, payload))"
                " + count(pg_notify('procrastinate_any_queue_v1', payload))"
                " FROM (SELECT queue_name, json_build_object('type', 'job_inserted',"
                " 'job_id', id)::text AS payload FROM woken) AS w")


_WAKE = _waking("lock = ANY(:locks)")
_WAKE_JOB = _waking("id = :id")


def _lock(platform_id: str) -> str:
    """procrastinate's lock of a platform's jobs: one runs at a time, in order."""
    return f"platform:{platform_id}"


def wake(session: Session, platform_ids: Iterable[str]) -> None:
    """What the jobs of these platforms may wait on changed (a host's report): a job that
    gave its slot back is taken up again at once rather than after its `again_in`.
    Inside the caller's transaction."""
    locks = [_lock(p) for p in platform_ids]
    if locks:
        session.execute(_WAKE, {"locks": locks})


def wake_job(session: Session, job_id: int) -> None:
    """`wake` for one procrastinate job, by its id."""
    session.execute(_WAKE_JOB, {"id": job_id})


Step = Callable[[StepContext], None]


class StepFailed(Exception):
    """A step failed in a way the job's failure handler should see (message is user-facing)."""


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its ordered steps and what happens after. Each domain lists its kinds
    in its `jobs.KINDS`; the worker learns them from the composition root."""

    name: str
    steps: tuple[tuple[str, Step], ...]
    on_failure: Callable[[StepContext, str], None] | None = None
    on_success: Callable[[StepContext], None] | None = None


@dataclass(frozen=True)
class Periodic:
    """Work a worker does every `every` seconds (`retry_every` after a failure), in a loop
    of its own so that a slow one never holds up another. Domains list theirs in
    `jobs.PERIODIC`."""

    name: str
    run: Callable[[Runtime], object]
    every: float = 2.0
    retry_every: float = 10.0


# procrastinate's priority: a free slot takes the due job of the highest first. A job a
# person (or a failure) waits on goes before scheduled upkeep: at 1,000 simulated hosts a
# platform's create waited seconds for a slot behind the backup schedule's round of
# hundreds (bench/fleet.py).
ASKED = 1
ROUTINE = 0

_PLATFORM_LOCK = 7261012  # advisory lock class of `create_job`, keyed by the platform

# A platform's jobs run in the order they were queued: procrastinate runs a job of a lock
# only when no job of that lock is running, and none still to run has a higher priority or
# the same one and an earlier id, even one not due yet. So a job asked for behind its
# platform's routine ones raises them to its own priority (they keep their order, and go
# with it) rather than pass them, and makes those set to start later due now: the backup
# schedule spreads its round's jobs over the round, and an upgrade must not wait for that.
_INHERIT = text("UPDATE procrastinate_jobs SET priority = greatest(priority, :priority),"
                " scheduled_at = CASE WHEN status = 'todo' AND scheduled_at > now()"
                " THEN now() ELSE scheduled_at END"
                " WHERE lock = :lock AND status IN ('todo', 'doing')"
                " AND (priority < :priority OR (status = 'todo' AND scheduled_at > now()))")


def create_job(session: Session, *, kind: JobKind, isv_id: str | None, platform_id: str | None,
               params: dict[str, object] | None = None, priority: int = ASKED,
               start_at: dt.datetime | None = None) -> Job:
    """Record a job with its steps and queue it, inside the caller's transaction, with
    `priority` (`ASKED`, or `ROUTINE` for scheduled work), to start at once or, for
    routine work, not before `start_at` (a job asked for later on the same platform makes
    it due at once)."""
    assert start_at is None or priority == ROUTINE, "a job asked for starts at once"
    job = Job(kind=kind.name, isv_id=isv_id, platform_id=platform_id, params=params or {},
              state="queued")
    job.steps = [JobStep(position=i, name=name) for i, (name, _) in enumerate(kind.steps)]
    session.add(job)
    session.flush()
    lock = _lock(platform_id) if platform_id else None
    if lock is not None:
        # one at a time per platform, until the caller's commit: a job queued at the same
        # moment by another transaction is seen by `_INHERIT`, not passed unseen
        session.execute(text("SELECT pg_advisory_xact_lock(:k, hashtext(:lock))"),
                        {"k": _PLATFORM_LOCK, "lock": lock})
        if priority > ROUTINE:
            session.execute(_INHERIT, {"priority": priority, "lock": lock})
    session.execute(
        text("SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock,"
             " NULL, CAST(:args AS jsonb), CAST(:start_at AS timestamptz))"
             "::procrastinate_job_to_defer_v1])"),
        {"queue": QUEUE, "task": TASK, "priority": priority, "lock": lock,
         "args": json.dumps({"job_id": job.id}), "start_at": start_at},
    )
    return job


def _set_step(runtime: Runtime, step_id: int, state: str, error: str | None = None) -> None:
    with runtime.sessions() as session:
        step = session.get(JobStep, step_id)
        assert step is not None
        step.state = state
        if state == "running":
            step.started_at = step.started_at or utcnow()
        else:
            step.ended_at = utcnow()
        step.error = error
        session.commit()


def run_job(runtime: Runtime, job_id: int, kinds: Mapping[str, JobKind]) -> None:
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.state in ("succeeded", "failed"):
            return
        job.state = "running"
        job.started_at = job.started_at or utcnow()
        session.commit()
        kind = kinds[job.kind]
        ctx = StepContext(runtime=runtime, job_id=job.id, platform_id=job.platform_id,
                          params=dict(job.params))
        steps = [(s.id, s.name, s.state, s.error, s.waiting_since) for s in job.steps]
    functions = dict(kind.steps)
    error: str | None = None
    for step_id, name, state, stored_error, waiting_since in steps:
        if state in ("done", "skipped"):
            continue
        if state == "failed":  # died while recovering from this failure: recover again
            error = stored_error or f"{name}: failed"
            break
        pause()
        if state != "running" or waiting_since is None:  # not when taken up after a wait
            _set_step(runtime, step_id, "running")
        ctx.step_id, ctx.waiting_since, ctx.waited = step_id, waiting_since, False
        try:
            functions[name](ctx)
        except Paused:
            log.info("job %s paused in step %s: the worker is stopping", job_id, name)
            raise
        except Waiting:
            log.debug("job %s waits in step %s with its slot given back", job_id, name)
            raise
        except (StepFailed, TenantryError) as exc:
            error = f"{name}: {exc}"
        except Exception as exc:  # a bug or an outage: record it, never lose the job silently
            log.error("job %s step %s crashed:\n%s", job_id, name, traceback.format_exc())
            error = f"{name}: {type(exc).__name__}: {exc}"
        finally:
            ctx.step_id = None
        if error is not None:
            _set_step(runtime, step_id, "failed", error)
            _skip_rest(runtime, job_id)
            break
        _set_step(runtime, step_id, "done")
    if error is not None and kind.on_failure is not None:
        try:
            kind.on_failure(ctx, error)
        except Exception as exc:
            log.error("job %s failure handler crashed:\n%s", job_id, traceback.format_exc())
            error = f"{error}; and recovering failed: {exc}"
    elif error is None and kind.on_success is not None:
        kind.on_success(ctx)
    with runtime.sessions() as session:
        job2 = session.get(Job, job_id)
        assert job2 is not None
        job2.state = "failed" if error else "succeeded"
        job2.error = error
        job2.ended_at = utcnow()
        session.commit()


def _skip_rest(runtime: Runtime, job_id: int) -> None:
    with runtime.sessions() as session:
        for step in session.scalars(select(JobStep).where(JobStep.job_id == job_id,
                                                          JobStep.state == "pending")):
            step.state = "skipped"
        session.commit()


PRUNE_BATCH = 5000  # rows a statement deletes: short transactions, whatever the backlog


def prune_history(runtime: Runtime) -> tuple[int, int]:
    """Delete what is older than the retention settings: ended jobs (their steps go with
    them), except each platform's last job of each kind, and events. Returns how many jobs
    and events went. Nothing reads further back than the retention (the backup schedule
    looks back one interval, at most weeks), and the audit log is not touched: it is a
    chain, kept as it is."""
    settings, now = runtime.settings, utcnow()
    pruned = [0, 0]
    if settings.job_retention_days:
        before = now - dt.timedelta(days=settings.job_retention_days)
        last_of_kind = select(func.max(Job.id)).group_by(Job.platform_id, Job.kind)
        old = (select(Job.id).where(Job.state.in_(("succeeded", "failed")),
                                    Job.created_at < before, Job.id.not_in(last_of_kind))
               .limit(PRUNE_BATCH))
        pruned[0] = _delete_in_batches(runtime, delete(Job).where(Job.id.in_(old)))
    if settings.event_retention_days:
        before = now - dt.timedelta(days=settings.event_retention_days)
        old = select(Event.id).where(Event.time < before).limit(PRUNE_BATCH)
        pruned[1] = _delete_in_batches(runtime, delete(Event).where(Event.id.in_(old)))
    if any(pruned):
        log.info("deleted %d job(s) and %d event(s) older than their retention", *pruned)
    return pruned[0], pruned[1]


def _delete_in_batches(runtime: Runtime, statement: Delete) -> int:
    total = 0
    while True:
        with runtime.sessions() as session:
            result = session.execute(statement.execution_options(synchronize_session=False))
            count = int(getattr(result, "rowcount", 0))
            session.commit()
        total += count
        if count < PRUNE_BATCH:
            return total


PRUNE = Periodic("delete jobs and events older than their retention", prune_history,
                 every=3600.0, retry_every=600.0)
