"""The job worker: procrastinate runs `jobs` rows; housekeeping requeues what a crash left;
each domain's periodic work runs in a loop of its own (`tenantry.app.periodic`).

SIGINT or SIGTERM stops it in a moment: running jobs pause at their next step or wait
(`jobs.Paused`), go back to the queue, and the next worker resumes them from that step.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import procrastinate
import procrastinate.manager

from tenantry import app as composition
from tenantry.core import jobs
from tenantry.core.errors import TenantryError
from tenantry.core.jobs import Periodic
from tenantry.core.runtime import Runtime, database_url

log = logging.getLogger(__name__)

HEARTBEAT = 2.0
STALLED_AFTER = 6.0
# s between a free slot's looks for a job that became due: a new job, and a waiting one a
# report woke (`jobs.wake`), wake the worker at once (NOTIFY); a wait's timer, the net,
# and a paused job are taken up by this look
FETCH_EVERY = 1.0
WORKER_NAME = "tenantry-worker"  # procrastinate's, and its logger's: procrastinate.worker.<name>


def make_app(runtime: Runtime) -> procrastinate.App:
    composition.metadata()  # every domain's tables are known to this process
    kinds = composition.job_kinds()
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=database_url(runtime.settings)))
    rechecks: dict[int, Callable[[], bool]] = {}
    app.job_manager = _Requeuer(app.connector, runtime, rechecks)  # before the task is made

    @app.task(name=jobs.TASK, queue=jobs.QUEUE, pass_context=False,
              retry=_TakeUpAgain(rechecks))
    def run_job(job_id: int) -> None:
        jobs.run_job(runtime, job_id, kinds)

    return app


class _TakeUpAgain(procrastinate.BaseRetryStrategy):
    """A job that paused because the worker stopped goes back to the queue at once (a
    worker that is stopping takes nothing new: the next one, or another, resumes it). One
    that gave its slot back to wait goes back until woken, or for the time it asked; its
    `changed` is kept for `_Requeuer`."""

    def __init__(self, rechecks: dict[int, Callable[[], bool]]) -> None:
        self.rechecks = rechecks

    def get_retry_decision(self, *, exception: BaseException,
                           job: procrastinate.jobs.Job) -> procrastinate.RetryDecision | None:
        now = dt.datetime.now(dt.UTC)
        if isinstance(exception, jobs.Paused):
            return procrastinate.RetryDecision(retry_at=now)
        if isinstance(exception, jobs.Waiting):
            if exception.changed is not None and job.id is not None:
                self.rechecks[job.id] = exception.changed
            return procrastinate.RetryDecision(
                retry_at=now + dt.timedelta(seconds=exception.again_in))
        return None


class _Requeuer(procrastinate.manager.JobManager):
    """procrastinate's, and once a waiting job is back in the queue, a last look whether
    what it waits on changed since its step looked: a report that came in between found
    the job still running, so its `jobs.wake` missed it. (The look waits for a report being
    written, so a report is either seen here or finds the job back in the queue.)"""

    def __init__(self, connector: procrastinate.BaseConnector, runtime: Runtime,
                 rechecks: dict[int, Callable[[], bool]]) -> None:
        super().__init__(connector)
        self.runtime, self.rechecks = runtime, rechecks
        self.own_workers: set[int] = set()  # procrastinate's ids of this process's workers

    async def register_worker(self) -> int:
        worker_id = await super().register_worker()
        self.own_workers.add(worker_id)
        return worker_id

    async def unregister_worker(self, worker_id: int) -> None:
        self.own_workers.discard(worker_id)
        await super().unregister_worker(worker_id)

    async def retry_job(self, job: procrastinate.jobs.Job,
                        retry_at: dt.datetime | None = None, priority: int | None = None,
                        queue: str | None = None, lock: str | None = None) -> None:
        await super().retry_job(job, retry_at=retry_at, priority=priority, queue=queue,
                                lock=lock)
        changed = self.rechecks.pop(job.id, None) if job.id is not None else None
        if job.id is not None and changed is not None:
            await asyncio.to_thread(self._wake_if, job.id, changed)

    def _wake_if(self, job_id: int, changed: Callable[[], bool]) -> None:
        try:
            if changed():
                with self.runtime.sessions() as session:
                    jobs.wake_job(session, job_id)
                    session.commit()
        except Exception:  # the job's timer still takes it up again
            log.exception("looking whether waiting job %s should be woken failed", job_id)


def _quiet_pauses(record: logging.LogRecord) -> bool:
    """procrastinate logs the traceback of every exception a job ends with; a pause is
    told by `jobs.run_job` in one line, and is no error. A wait that gave its slot back is
    not told at all: it happens every few seconds while a step waits on a host."""
    if record.exc_info and isinstance(record.exc_info[1], jobs.Waiting):
        return False
    if record.exc_info and isinstance(record.exc_info[1], jobs.Paused):
        record.exc_info, record.exc_text = None, None
    return True


def _quiet_retakes(record: logging.LogRecord) -> bool:
    """procrastinate tells each start of a job; a job taken up again (after a wait gave its
    slot back, every few seconds while it waits, or after a pause) is told only once, at
    its first start: `jobs.run_job` tells a pause itself."""
    job = getattr(record, "job", None)
    return not (getattr(record, "action", None) == "start_job" and isinstance(job, dict)
                and job.get("attempts", 0) > 0)


async def _repeat(task: Periodic, runtime: Runtime) -> None:
    """Run `task` every `task.every` seconds; a failure is told once, not at every turn (a
    slow or failing object store must not fill the log, nor hold up other work)."""
    failing: str | None = None
    while True:
        try:
            await asyncio.to_thread(task.run, runtime)
            if failing is not None:
                log.info("%s: working again", task.name)
            failing, pause = None, task.every
        except TenantryError as exc:
            if exc.message != failing:
                log.warning("%s: %s", task.name, exc.message)
            failing, pause = exc.message, task.retry_every
        except Exception:
            if failing != "unexpected":
                log.exception("%s failed; trying again", task.name)
            failing, pause = "unexpected", task.retry_every
        await asyncio.sleep(pause)


async def _requeue_stalled(app: procrastinate.App) -> None:
    """A worker that was killed leaves its jobs in `doing`; its heartbeat stops, so after
    STALLED_AFTER seconds the job is handed to a live worker, which resumes it from its
    recorded step.

    This process's own worker runs on this very event loop: while this runs, so does it,
    however late its heartbeat. A machine that stalled for seconds (280 platforms being
    made on 2 cores) made this process's heartbeat late, and it handed its own running jobs
    back to the queue: each then ran twice at once. Its heartbeat is therefore brought up
    to date before each look, and its jobs are never handed back here."""
    manager = app.job_manager
    own = manager.own_workers if isinstance(manager, _Requeuer) else set()
    while True:
        try:
            for worker_id in list(own):
                await manager.update_heartbeat(worker_id)
            for job in await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER):
                if job.worker_id in own:
                    continue
                log.warning("requeueing job %s left by a dead worker", job.id)
                await manager.retry_job(job)
            await manager.prune_stalled_workers(STALLED_AFTER)
        except Exception:
            log.exception("requeueing stalled jobs failed; trying again")
        await asyncio.sleep(2.0)


# hours procrastinate's rows of an ended job are kept: tenantry's `jobs` and `job_steps`
# are the record (kept for TENANTRY_JOB_RETENTION_DAYS); the queue's rows serve only while
# a job runs. A job that gives its slot back while it waits adds two of procrastinate's
# events each time it is taken up again (thousands for a backup that waits hours).
QUEUE_KEPT_HOURS = 24


async def prune_queue(app: procrastinate.App) -> None:
    """Delete procrastinate's rows (and their events) of jobs ended QUEUE_KEPT_HOURS ago."""
    await app.job_manager.delete_old_jobs(nb_hours=QUEUE_KEPT_HOURS, include_failed=True,
                                          include_cancelled=True, include_aborted=True)


async def _prune_queue(app: procrastinate.App) -> None:
    """`prune_queue`, hourly."""
    while True:
        try:
            await prune_queue(app)
        except Exception:
            log.exception("deleting old queue rows failed; trying again in an hour")
        await asyncio.sleep(3600.0)


CONCURRENCY = 12  # jobs at a time


def _periodic() -> tuple[Periodic, ...]:
    return (jobs.PRUNE, *composition.periodic())


def threads(concurrency: int = CONCURRENCY) -> int:
    """The worker's threads, and so its store connections kept: procrastinate runs each job,
    and `_repeat` each periodic task, on the loop's default executor, whose size is the
    machine's cores + 4 by default: on 2 cores a job's slot beyond the 6th (fewer while
    periodic work runs) only waited for a thread. A job mostly waits on a host's report, so
    a thread for every slot and every periodic task costs little. A connection for each:
    beyond the pool's kept ones, each session opened a PostgreSQL backend and closed it
    after (a tenth of a core at 1,000 hosts, bench/fleet.py)."""
    return concurrency + len(_periodic()) + 2


async def run_worker(runtime: Runtime, *, concurrency: int = CONCURRENCY) -> None:
    app = make_app(runtime)
    logging.getLogger("procrastinate.worker").addFilter(_quiet_pauses)
    logging.getLogger(f"procrastinate.worker.{WORKER_NAME}").addFilter(_quiet_retakes)
    periodic = _periodic()
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
        max_workers=threads(concurrency), thread_name_prefix="tenantry-worker"))
    async with app.open_async():
        keepers = [asyncio.create_task(_requeue_stalled(app))]
        keepers += [asyncio.create_task(_repeat(task, runtime)) for task in periodic]
        keepers.append(asyncio.create_task(_prune_queue(app)))
        work = asyncio.create_task(app.run_worker_async(
            queues=[jobs.QUEUE], concurrency=concurrency, name=WORKER_NAME,
            update_heartbeat_interval=HEARTBEAT, stalled_worker_timeout=STALLED_AFTER,
            fetch_job_polling_interval=FETCH_EVERY, install_signal_handlers=False))

        def stop() -> None:
            if jobs.stopping.is_set():  # a terminal's Ctrl-C, then `up`'s SIGTERM: once
                return
            log.info("stopping: running jobs pause at their next step")
            jobs.stopping.set()
            # procrastinate stops this worker's heartbeat as its stop begins: requeueing
            # now would hand this worker's own pausing jobs to another worker.
            for keeper in keepers:
                keeper.cancel()
            work.cancel()  # procrastinate's graceful stop: it waits for the running jobs

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await work
        finally:
            for keeper in keepers:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
