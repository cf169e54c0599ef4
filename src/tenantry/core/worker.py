"""The job worker: procrastinate runs `jobs` rows; housekeeping requeues what a crash left."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import procrastinate

from tenantry.core import jobs
from tenantry.core.errors import TenantryError
from tenantry.core.runtime import Runtime, database_url

log = logging.getLogger(__name__)

HEARTBEAT = 2.0
STALLED_AFTER = 6.0


def make_app(runtime: Runtime) -> procrastinate.App:
    # Importing the domain job modules registers their job kinds.
    import tenantry.platforms.jobs  # noqa: F401

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=database_url(runtime.settings)))

    @app.task(name=jobs.TASK, queue=jobs.QUEUE, pass_context=False)
    def run_job(job_id: int) -> None:
        jobs.run_job(runtime, job_id)

    return app


async def _ship_audit_heads(runtime: Runtime) -> None:
    """The signed audit head goes offsite at least every 60 s, in a loop of its own: a slow or
    failing object store must not hold up requeueing jobs or marking hosts offline."""
    from tenantry.access.audit.service import ship_head_if_due

    failing: str | None = None
    while True:
        try:
            await asyncio.to_thread(ship_head_if_due, runtime)
            if failing is not None:
                log.info("audit head shipped offsite again")
            failing, pause = None, 2.0
        except TenantryError as exc:  # told once, not every 2 s
            if exc.message != failing:
                log.warning("cannot ship the audit head offsite: %s", exc.message)
            failing, pause = exc.message, 10.0
        except Exception:
            log.exception("shipping the audit head failed; trying again")
            failing, pause = "unexpected", 10.0
        await asyncio.sleep(pause)


async def _housekeeping(app: procrastinate.App, runtime: Runtime) -> None:
    from tenantry.access.keys.service import notify_expiring
    from tenantry.platforms.hosts import mark_offline_hosts

    while True:
        try:
            # A worker that was killed leaves its jobs in `doing`; its heartbeat stops, so
            # after STALLED_AFTER seconds the job is handed to a live worker, which resumes it
            # from its recorded step.
            for job in await app.job_manager.get_stalled_jobs(
                    seconds_since_heartbeat=STALLED_AFTER):
                log.warning("requeueing job %s left by a dead worker", job.id)
                await app.job_manager.retry_job(job)
            await app.job_manager.prune_stalled_workers(STALLED_AFTER)
            with runtime.sessions() as session:
                await asyncio.to_thread(mark_offline_hosts, session=session)
            with runtime.sessions() as session:
                await asyncio.to_thread(notify_expiring, session=session)
        except Exception:
            log.exception("housekeeping failed; trying again")
        await asyncio.sleep(2.0)


async def run_worker(runtime: Runtime, *, concurrency: int = 12) -> None:
    app = make_app(runtime)
    async with app.open_async():
        keepers = [asyncio.create_task(_housekeeping(app, runtime)),
                   asyncio.create_task(_ship_audit_heads(runtime))]
        try:
            await app.run_worker_async(
                queues=[jobs.QUEUE], concurrency=concurrency, name="tenantry-worker",
                update_heartbeat_interval=HEARTBEAT, stalled_worker_timeout=STALLED_AFTER,
                fetch_job_polling_interval=1.0, install_signal_handlers=True)
        finally:
            for keeper in keepers:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
