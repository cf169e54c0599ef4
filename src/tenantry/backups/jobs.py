"""Backup and restore jobs.

Jobs of one platform run one at a time (the job queue locks per platform), so a backup and a
restore of it are never interleaved.

A restore in place goes: the app stopped (the database stays up), a safety backup, the
database stopped, pgBackRest's restore (`--delta`) with the target written for PostgreSQL,
the database started (it replays WAL to the target and is promoted), the app started and
probed. If anything fails once the restore began, the platform is put back as it was: the
safety backup was taken with the app stopped, so restoring it to its end (`immediate`) is
exactly the state before the restore.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from tenantry.backups.schemas import BackupType
from tenantry.core.events import emit
from tenantry.core.jobs import JobKind, Periodic, StepContext, StepFailed
from tenantry.platforms.contract import BackupTask, DesiredState, PlatformReport, RestoreTask
from tenantry.platforms.hosts import bump
from tenantry.platforms.jobs import (
    BACKUP_WAIT,
    Check,
    db_ready,
    load_platform,
    probe,
    run_backup,
    serving,
    set_running,
    step_backups_on,
    stopped,
    wait_observed,
)
from tenantry.platforms.models import Platform

# ---------------------------------------------------------------- backup


def _task(ctx: StepContext) -> BackupTask:
    return BackupTask(id=f"b{ctx.job_id}", type=cast(BackupType, ctx.params.get("type", "incr")))


def step_backup(ctx: StepContext) -> None:
    run_backup(ctx, _task(ctx))


def _told(ctx: StepContext, kind: str, reason: str | None = None) -> None:
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        if platform is None:
            return
        name = f"{platform.isv.name}/{platform.name}"
        task = _task(ctx)
        if reason is None:
            report = platform.observed.backup if platform.observed else None
            outcome = report.tasks.get(task.id, "") if report else ""
            label = outcome.removeprefix("ok: ").removeprefix("ok")
            found = [b for b in (report.backups if report else []) if b.label == label]
            size = f", {found[0].size / 2**20:.1f} MiB in " \
                   f"{found[0].finished_at - found[0].started_at:.1f} s" if found else ""
            message = f"{task.type} backup {label} of {name} done{size}"
        else:
            message = f"{task.type} backup of {name} failed: {reason}"
        emit(session, kind, message, isv_id=platform.isv_id, platform_id=platform.id,
             host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


BACKUP = JobKind(name="backup", steps=(("configure", step_backups_on), ("backup", step_backup)),
                 on_success=lambda ctx: _told(ctx, "BACKUP"),
                 on_failure=lambda ctx, reason: _told(ctx, "BACKUP_FAILED", reason))


# ---------------------------------------------------------------- restore in place


def _ids(ctx: StepContext) -> tuple[str, str, str]:
    """(safety backup, restore, undo) task ids of this job."""
    return f"s{ctx.job_id}", f"r{ctx.job_id}", f"u{ctx.job_id}"


def _set_apps(ctx: StepContext, running: bool) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        want = platform.desired.model_copy(deep=True)
        changed = [s for s in want.slots.values() if s.running != running]
        for slot in changed:
            slot.running = running
        if changed:
            platform.desired = want
            bump(session, platform)
        session.commit()


def _apps_stopped(observed: PlatformReport, _: DesiredState) -> bool:
    return all(s.state in ("stopped", "failed") for s in observed.slots.values())


def _restored(task_id: str) -> Check:
    def check(observed: PlatformReport, _: DesiredState) -> bool:
        state = observed.backup.restores.get(task_id, "") if observed.backup else ""
        if state.startswith("failed"):
            raise StepFailed(f"pgBackRest could not restore: {state.removeprefix('failed: ')}")
        return state == "ok"
    return check


def _ask_restore(ctx: StepContext, task: RestoreTask) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        current = platform.desired.restore
        if current is None or current.id != task.id:
            platform.desired = platform.desired.model_copy(update={"restore": task})
            bump(session, platform)
        session.commit()
    wait_observed(ctx, "the restore", _restored(task.id), timeout=BACKUP_WAIT)


def step_quiesce(ctx: StepContext) -> None:
    _set_apps(ctx, False)
    wait_observed(ctx, "the app processes to stop", _apps_stopped)


def step_safety(ctx: StepContext) -> None:
    run_backup(ctx, BackupTask(id=_ids(ctx)[0], type="incr"))


def step_stop_database(ctx: StepContext) -> None:
    set_running(ctx, False)
    wait_observed(ctx, "the database to stop", stopped)


def step_restore(ctx: StepContext) -> None:
    target = ctx.params.get("target")
    _ask_restore(ctx, RestoreTask(id=_ids(ctx)[1],
                                  target=float(cast(float, target)) if target is not None
                                  else None))


def step_resume(ctx: StepContext) -> None:
    set_running(ctx, True)
    _set_apps(ctx, True)
    wait_observed(ctx, "the database to replay WAL and open", db_ready, timeout=BACKUP_WAIT)
    wait_observed(ctx, "the app to serve again", serving)


def _when(ctx: StepContext) -> str:
    target = ctx.params.get("target")
    if target is None:
        return "the latest archived commit"
    return dt.datetime.fromtimestamp(float(cast(float, target)), dt.UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def _restore_done(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        platform.state, platform.error = "ready", None
        emit(session, "RESTORE", f"{platform.isv.name}/{platform.name} restored to "
             f"{_when(ctx)}", isv_id=platform.isv_id, platform_id=platform.id,
             host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


def _restore_failed(ctx: StepContext, reason: str) -> None:
    """Put the platform back as it was before the restore, then say why."""
    safety_id, restore_id, undo_id = _ids(ctx)
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        report = platform.observed.backup if platform.observed else None
        safety = report.tasks.get(safety_id, "") if report else ""
        began = platform.desired.restore is not None and \
            platform.desired.restore.id in (restore_id, undo_id)
    outcome = "the platform was left as it was"
    try:
        if began:
            label = safety.removeprefix("ok: ")
            if not safety.startswith("ok: "):
                raise StepFailed("no safety backup to go back to")
            step_stop_database(ctx)
            _ask_restore(ctx, RestoreTask(id=undo_id, label=label, immediate=True))
            outcome = f"the platform was put back as it was (safety backup {label})"
        step_resume(ctx)
        state, error = "ready", f"restore failed; {outcome}: {reason}"
    except (StepFailed, Exception) as exc:  # noqa: BLE001 - told below, never lost
        state, error = "failed", f"restore failed ({reason}) and undoing it failed too: {exc}"
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        platform.state, platform.error = state, error
        emit(session, "RESTORE_FAILED", f"{platform.isv.name}/{platform.name}: {error}",
             isv_id=platform.isv_id, platform_id=platform.id, host_id=platform.host_id,
             job_id=ctx.job_id)
        session.commit()


RESTORE = JobKind(
    name="restore",
    steps=(("configure", step_backups_on), ("stop app", step_quiesce),
           ("safety backup", step_safety), ("stop database", step_stop_database),
           ("restore", step_restore), ("start", step_resume), ("health", probe)),
    on_success=_restore_done, on_failure=_restore_failed)

KINDS = (BACKUP, RESTORE)
PERIODIC: tuple[Periodic, ...] = ()
