"""The backup job: the platform's backup configuration in place, then one backup.

Jobs of one platform run one at a time (the job queue locks per platform), so a backup and a
restore of it are never interleaved."""

from __future__ import annotations

from typing import cast

from tenantry.backups.schemas import BackupType
from tenantry.core.events import emit
from tenantry.core.jobs import JobKind, Periodic, StepContext
from tenantry.platforms.contract import BackupTask
from tenantry.platforms.jobs import run_backup, step_backups_on
from tenantry.platforms.models import Platform


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

KINDS = (BACKUP,)
PERIODIC: tuple[Periodic, ...] = ()
