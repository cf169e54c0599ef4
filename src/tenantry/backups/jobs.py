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
import time
from collections.abc import Sequence
from typing import cast

from sqlalchemy import JSON, func, select, type_coerce
from sqlalchemy.orm import Session

from tenantry.backups.models import BackupSchedule, Drill
from tenantry.backups.purge import PURGE
from tenantry.backups.schemas import CheckType
from tenantry.core import jobs
from tenantry.core.events import emit
from tenantry.core.jobs import JobKind, Periodic, StepContext, StepFailed, create_job
from tenantry.core.models import Job
from tenantry.core.runtime import Runtime
from tenantry.platforms import backing
from tenantry.platforms.contract import (
    BackupTask,
    DatabaseSpec,
    DesiredSlot,
    DesiredState,
    DrillReport,
    DrillTask,
    PlatformReport,
    RestoreTask,
)
from tenantry.platforms.hosts import bump
from tenantry.platforms.jobs import (
    BACKUP_WAIT,
    CREATE,
    CREATE_STEPS,
    Check,
    ask_restore,
    db_ready,
    load_platform,
    probe,
    restored,
    run_backup,
    serving,
    step_backups_on,
    step_place,
    step_quiesce,
    step_resume,
    step_stop_database,
    wait_observed,
)
from tenantry.platforms.models import Host, Platform, PortAllocation
from tenantry.platforms.placement import WEB_PROCESSES, allocate_ports
from tenantry.platforms.service import ACTIVE_JOB_STATES

# ---------------------------------------------------------------- backup


def _task(ctx: StepContext) -> BackupTask:
    kind = cast(CheckType, ctx.params.get("type", "incr"))
    labels = [str(x) for x in cast(list[object], ctx.params.get("labels", []))]
    return BackupTask(id=f"b{ctx.job_id}", type=kind, labels=labels)


def step_backup(ctx: StepContext) -> None:
    run_backup(ctx, _task(ctx))


def _told(ctx: StepContext, reason: str | None = None) -> None:
    """The event (and for a restore test, the drill record) of a backup job's outcome."""
    task = _task(ctx)
    with ctx.runtime.sessions() as session:
        platform = session.get(Platform, ctx.platform_id)
        if platform is None:
            return
        name = f"{platform.isv.name}/{platform.name}"
        report = platform.observed.backup if platform.observed else None
        outcome = report.tasks.get(task.id, "") if report else ""
        detail = outcome.removeprefix("ok: ").removeprefix("failed: ")
        if task.type == "restore-test":
            job = session.get(Job, ctx.job_id)
            started = job.started_at if job and job.started_at else None
            drill = Drill(platform_id=platform.id, isv_id=platform.isv_id, job_id=ctx.job_id,
                          kind="restore-test", host=platform.host.name if platform.host
                          else "?", result="ok" if reason is None else "failed",
                          detail=detail or reason)
            if started is not None:
                drill.started_at = started
                drill.rto_seconds = round(time.time() - started.timestamp(), 3)
            session.add(drill)
            kind = "DRILL" if reason is None else "DRILL_FAILED"
            message = (f"restore test of {name}: {detail}" if reason is None else
                       f"restore test of {name} failed: {reason}")
        elif task.type == "expire":
            kind = "BACKUP" if reason is None else "BACKUP_FAILED"
            message = (f"retention of {name}: {detail}" if reason is None else
                       f"retention of {name} failed: {reason}")
        elif task.type == "verify":
            kind = "BACKUP" if reason is None else "BACKUP_FAILED"
            message = (f"verify of {name}'s repository: {detail}" if reason is None else
                       f"verify of {name}'s repository failed: {reason}")
        elif reason is None:
            label = detail
            found = [b for b in (report.backups if report else []) if b.label == label]
            size = f", {found[0].size / 2**20:.1f} MiB in " \
                   f"{found[0].finished_at - found[0].started_at:.1f} s" if found else ""
            kind, message = "BACKUP", f"{task.type} backup {label} of {name} done{size}"
        else:
            kind, message = "BACKUP_FAILED", f"{task.type} backup of {name} failed: {reason}"
        emit(session, kind, message, isv_id=platform.isv_id, platform_id=platform.id,
             host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


BACKUP = JobKind(name="backup", steps=(("configure", step_backups_on), ("backup", step_backup)),
                 on_success=_told, on_failure=_told)


# ---------------------------------------------------------------- restore in place


def _ids(ctx: StepContext) -> tuple[str, str, str]:
    """(safety backup, restore, undo) task ids of this job."""
    return f"s{ctx.job_id}", f"r{ctx.job_id}", f"u{ctx.job_id}"


def step_safety(ctx: StepContext) -> None:
    run_backup(ctx, BackupTask(id=_ids(ctx)[0], type="incr"))


def step_restore(ctx: StepContext) -> None:
    target = ctx.params.get("target")
    ask_restore(ctx, RestoreTask(id=_ids(ctx)[1],
                                  target=float(cast(float, target)) if target is not None
                                  else None))


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
            ask_restore(ctx, RestoreTask(id=undo_id, label=label, immediate=True))
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

# ---------------------------------------------------------------- disaster-recovery drill

LOAD_SECONDS = 20.0  # the write load runs this long before the destruction, by default


def _drill_id(ctx: StepContext) -> str:
    return f"d{ctx.job_id}"


def _elsewhere(ctx: StepContext) -> bool:
    """The recovery is on another host than the load (`--host`)."""
    return ctx.params.get("host") is not None


def _set_drill(ctx: StepContext, phase: str, restore: RestoreTask | None = None,
               acked: list[tuple[int, int]] | None = None) -> None:
    task = DrillTask(id=_drill_id(ctx), phase=phase, acked=acked or [])
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        want = platform.desired
        if want.drill != task or (restore is not None and want.restore != restore):
            update: dict[str, object] = {"drill": task}
            if restore is not None:
                update["restore"] = restore
            platform.desired = want.model_copy(update=update)
            bump(session, platform)
        session.commit()


def _keep_param(ctx: StepContext, key: str, value: object) -> None:
    """A fact the later steps need, kept with the job: a restarted worker has it."""
    ctx.params[key] = value
    with ctx.runtime.sessions() as session:
        job = session.get(Job, ctx.job_id)
        if job is not None and key not in job.params:
            job.params = {**job.params, key: value}
        session.commit()


def _drill_seen(phase: str, done: str) -> Check:
    def check(observed: PlatformReport, desired: DesiredState) -> bool:
        report = observed.backup.drill if observed.backup else None
        if report is None or desired.drill is None or report.id != desired.drill.id:
            return False
        if report.error:
            raise StepFailed(f"the drill failed on the host: {report.error}")
        if done == "acked":
            return report.acked > 0
        if done == "destroyed":
            return report.destroyed_at is not None
        return report.lost is not None
    return check


def step_load(ctx: StepContext) -> None:
    _set_drill(ctx, "load")
    wait_observed(ctx, "the write load to start", _drill_seen("load", "acked"))
    jobs.sleep(float(cast(float, ctx.params.get("seconds", LOAD_SECONDS))))


def step_destroy(ctx: StepContext) -> None:
    """The data directory, the postmaster and the WAL spool go; on the same host, the same
    write asks for the recovery from the repository alone (the latest archived WAL). For a
    recovery elsewhere the lost host's log of the load is kept with the job."""
    if _elsewhere(ctx):
        _set_drill(ctx, "destroy")
    else:
        _set_drill(ctx, "destroy", RestoreTask(id=_drill_id(ctx)))
    wait_observed(ctx, "the database to be destroyed", _drill_seen("destroy", "destroyed"))
    if _elsewhere(ctx) and "lost_host" not in ctx.params:
        with ctx.runtime.sessions() as session:
            platform = load_platform(session, ctx)
            backup = platform.observed.backup if platform.observed else None
            report = backup.drill if backup else None
            assert report is not None  # the wait above saw it
            lost_host = {"host": platform.host.name if platform.host else "?",
                         "report": report.model_dump(mode="json")}
        _keep_param(ctx, "lost_host", lost_host)


def step_move(ctx: StepContext) -> None:
    """Recovery elsewhere: the platform moves to the drill's host, whose first desired state
    asks for the cluster from the repository alone (as `dr recover` does); the host of the
    load drops what is left of it there. On the same host, nothing to do."""
    if not _elsewhere(ctx):
        return
    place_elsewhere(ctx, RestoreTask(id=_drill_id(ctx)), drop_drill=True)


def step_recover(ctx: StepContext) -> None:
    wait_observed(ctx, "the restore from the repository", restored(_drill_id(ctx)),
                  timeout=BACKUP_WAIT)
    wait_observed(ctx, "the database to replay WAL and open", db_ready, timeout=BACKUP_WAIT)
    wait_observed(ctx, "the app to serve again", serving)
    probe(ctx)
    if "served_at" not in ctx.params:
        _keep_param(ctx, "served_at", time.time())


def _lost_host_report(ctx: StepContext) -> DrillReport | None:
    kept = ctx.params.get("lost_host")
    if not isinstance(kept, dict):
        return None
    return DrillReport.model_validate(kept["report"])


def step_verify(ctx: StepContext) -> None:
    lost = _lost_host_report(ctx)
    _set_drill(ctx, "verify", acked=lost.acked_ranges if lost else None)
    wait_observed(ctx, "the count of what came back", _drill_seen("verify", "counted"))


def _record(ctx: StepContext, reason: str | None) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        backup = platform.observed.backup if platform.observed else None
        report = backup.drill if backup else None
        if report is not None and report.id != _drill_id(ctx):
            report = None
        load = _lost_host_report(ctx) or report  # where the load ran and the disk was lost
        served = ctx.params.get("served_at")
        destroyed = load.destroyed_at if load else None
        rto = float(cast(float, served)) - destroyed if served and destroyed else None
        rpo = None
        if report is not None and report.lost is not None and destroyed is not None:
            rpo = max(0.0, destroyed - (report.last_kept_at or (load.first_acked_at if load
                                                                 else None) or destroyed))
        host = platform.host.name if platform.host else "?"
        same = not _elsewhere(ctx)
        job = session.get(Job, ctx.job_id)
        drill = Drill(platform_id=platform.id, isv_id=platform.isv_id, job_id=ctx.job_id,
                      host=host, same_host=same, result="ok" if reason is None else "failed",
                      acked_commits=load.acked if load else None,
                      lost_commits=report.lost if report else None,
                      rpo_seconds=round(rpo, 3) if rpo is not None else None,
                      rto_seconds=round(rto, 3) if rto is not None else None, detail=reason)
        if job is not None and job.started_at is not None:
            drill.started_at = job.started_at
        session.add(drill)
        name = f"{platform.isv.name}/{platform.name}"
        if reason is None:
            platform.state, platform.error = "ready", None
            where = "fresh directories on the same host" if same else \
                f"another host; the load ran on {_lost_host_name(ctx)}"
            emit(session, "DRILL", f"DR drill of {name}: recovered on {host} ({where}) with "
                 f"{drill.lost_commits} of "
                 f"{drill.acked_commits} acknowledged commits lost, RPO {drill.rpo_seconds} s, "
                 f"RTO {drill.rto_seconds} s", isv_id=platform.isv_id,
                 platform_id=platform.id, host_id=platform.host_id, job_id=ctx.job_id)
        else:
            platform.state, platform.error = "failed", f"DR drill failed: {reason}"
            emit(session, "DRILL_FAILED", f"DR drill of {name} failed: {reason}",
                 isv_id=platform.isv_id, platform_id=platform.id,
                 host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


def _lost_host_name(ctx: StepContext) -> str:
    kept = ctx.params.get("lost_host")
    return str(kept.get("host", "?")) if isinstance(kept, dict) else "?"


def _drill_failed(ctx: StepContext, reason: str) -> None:
    """Stop the load; record the failure. A drill that failed before the destruction leaves
    the platform as it was; one that failed after it is a real outage: the platform is
    marked failed, for a person (or `dr recover`) to act."""
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        destroyed = platform.desired.drill is not None and \
            platform.desired.drill.phase != "load"
        if not destroyed:
            platform.desired = platform.desired.model_copy(update={"drill": None})
            bump(session, platform)
        session.commit()
    if not destroyed:
        with ctx.runtime.sessions() as session:
            platform = load_platform(session, ctx)
            name = f"{platform.isv.name}/{platform.name}"
            session.add(Drill(platform_id=platform.id, isv_id=platform.isv_id,
                              job_id=ctx.job_id, host=platform.host.name if platform.host
                              else "?", result="failed", detail=reason))
            platform.state, platform.error = "ready", None
            emit(session, "DRILL_FAILED", f"DR drill of {name} failed before the "
                 f"destruction: {reason}", isv_id=platform.isv_id, platform_id=platform.id,
                 job_id=ctx.job_id)
            session.commit()
        return
    _record(ctx, reason)


DRILL = JobKind(
    name="drill",
    steps=(("configure", step_backups_on), ("load", step_load), ("destroy", step_destroy),
           ("move", step_move), ("recover", step_recover), ("verify", step_verify)),
    on_success=lambda ctx: _record(ctx, None), on_failure=_drill_failed)

# ---------------------------------------------------------------- the schedule

# How often each platform is backed up and checked, by default (pgBackRest's and Frappe
# Cloud's usual rhythm, with a restore test of every platform every week).
EVERY = {
    "full": dt.timedelta(days=7),
    "diff": dt.timedelta(days=1),
    "incr": dt.timedelta(hours=4),
    "verify": dt.timedelta(days=1),
    "restore-test": dt.timedelta(days=7),
}
FIRST_CHECK_AFTER = dt.timedelta(hours=6)  # a new platform's first verify and restore test
RETRY_AFTER = dt.timedelta(minutes=10)  # a failed scheduled job is tried again after this
# Scheduled backup jobs active at once on one host (its disk and CPU), not in the fleet: a
# fleet-wide cap (4 every 30 s) was 11,520 jobs a day, and 6,000 platforms ask about 48,000.
PER_HOST = 2
ROUND = 30.0  # s between two rounds of the schedule; a round's jobs are spread over it,
GAP = 1.0  # at most this many s apart


def due(now: dt.datetime, backups: Sequence[tuple[str, dt.datetime]],
        checks: dict[str, dt.datetime],
        every: dict[str, dt.timedelta] | None = None) -> str | None:
    """What the platform needs next, given its backups' (type, end) and when each check
    last ran: a full when none is younger than a week, else a differential when nothing
    since the last full or differential is a day old, else an incremental every 4 hours;
    then a verify and a restore test when theirs are due (the first ones 6 hours after the
    platform's first backup, so that new platforms do not all check at once)."""
    every = {**EVERY, **(every or {})}
    last = {kind: max((t for k, t in backups if k == kind), default=None)
            for kind in ("full", "diff", "incr")}
    full = last["full"]
    if full is None or now - full >= every["full"]:
        return "full"
    base = max(t for t in (full, last["diff"]) if t is not None)
    if now - base >= every["diff"]:
        return "diff"
    newest = max(t for t in last.values() if t is not None)
    if now - newest >= every["incr"]:
        return "incr"
    first = min(t for _, t in backups)
    for check in ("verify", "restore-test"):
        ran = checks.get(check)
        if (ran is None and now - first >= FIRST_CHECK_AFTER) or (
                ran is not None and now - ran >= every[check]):
            return check
    return None


def schedule_of(row: BackupSchedule) -> dict[str, dt.timedelta]:
    """A platform's own intervals (the defaults fill in the rest)."""
    found = {"full": row.full, "diff": row.diff, "incr": row.incr, "verify": row.verify,
             "restore-test": row.restore_test}
    return {k: dt.timedelta(seconds=v) for k, v in found.items() if v is not None}


KEEP = {"daily": 7, "weekly": 4, "monthly": 12}  # grandfather-father-son, by default


def expired(now: dt.datetime, backups: Sequence[tuple[str, str, dt.datetime]],
            keep: dict[str, int] | None = None) -> list[str]:
    """The full backups (labels) retention lets go, given every backup's (label, type,
    end): kept are the newest backup of each of the last 7 days, of each of the last 4
    weeks and of each of the last 12 months, and the newest backup of all, each with the
    full backup it builds on (a differential's or incremental's label starts with its
    full's). A full none of them builds on goes, with everything built on it; the newest
    full always stays."""
    keep = keep or KEEP
    if not backups:
        return []
    kept: set[str] = {max(backups, key=lambda b: b[2])[0]}
    for rule in ("daily", "weekly", "monthly"):
        newest: dict[object, tuple[dt.datetime, str]] = {}
        for label, _, end in backups:
            key = _period(rule, end)
            if key not in newest or end > newest[key][0]:
                newest[key] = (end, label)
        for _, (_, label) in sorted(newest.items(), key=lambda kv: kv[1][0],
                                    reverse=True)[:keep[rule]]:
            kept.add(label)
    fulls = sorted((b for b in backups if b[1] == "full"), key=lambda b: b[2])
    needed = {full for full, _, _ in fulls for label in kept if label.startswith(full)}
    if fulls:
        needed.add(fulls[-1][0])
    return [label for label, _, _ in fulls if label not in needed]


def _period(rule: str, when: dt.datetime) -> object:
    if rule == "daily":
        return when.date()
    if rule == "weekly":
        return tuple(when.isocalendar())[:2]
    return (when.year, when.month)


def run_schedule(runtime: Runtime) -> None:
    """Start the backups and checks that are due, at most PER_HOST at a time on a host,
    spread over the round: the k-th of a round's n jobs is set to start k times
    min(ROUND / n, GAP) later. Started together, a round's jobs (about 60 at 20,000
    platforms) and their hosts' answers filled both cores of the control plane for a few
    seconds every round, and the agents' calls in those seconds took 0.1-0.3 s
    (bench/fleet.py). A small round is not held back longer than it needs: its jobs go a
    GAP apart.

    The store is asked three things a round, whatever the number of platforms: the
    platforms' own schedules, the active jobs, and each platform's last backup job of each
    type (`_recent`); one query per platform (its last 50 jobs) made a round of a fleet of
    6,000 platforms 6,000 queries."""
    now = dt.datetime.now(dt.UTC)
    with runtime.sessions() as session:
        own = {s.platform_id: schedule_of(s) for s in session.scalars(select(BackupSchedule))}
        active = session.execute(
            select(Job.platform_id, Job.kind, Platform.host_id)
            .join(Platform, Platform.id == Job.platform_id)
            .where(Job.state.in_(ACTIVE_JOB_STATES))).all()
        busy = {pid for pid, _, _ in active}
        backing_up: dict[str | None, int] = {}
        for _, job_kind, host_id in active:
            if job_kind == BACKUP.name:
                backing_up[host_id] = backing_up.get(host_id, 0) + 1
        longest = max([*EVERY.values(), *(v for o in own.values() for v in o.values())])
        recent = _recent(session, since=now - longest - FIRST_CHECK_AFTER)
        # Only the list of backups of each platform's report, not the whole row: its
        # desired and observed documents, read and validated 6,000 times a round, were the
        # round's cost.
        listed = type_coerce(Platform.observed, JSON)["backup"]["backups"]
        starts: list[tuple[str, str, dict[str, object]]] = []
        for platform_id, host_id, isv_id, raw in session.execute(
                select(Platform.id, Platform.host_id, Platform.isv_id, listed)
                .where(Platform.state.in_(("ready", "degraded"))).order_by(Platform.id)):
            if platform_id in busy or host_id is None:
                continue
            if backing_up.get(host_id, 0) >= PER_HOST:
                continue
            found = [(str(b["label"]), str(b["type"]),
                      dt.datetime.fromtimestamp(float(b["finished_at"]), dt.UTC))
                     for b in (raw or [])]
            last = recent.get(platform_id, {})
            checks = {t: ok for t, (ok, _, _) in last.items() if ok is not None}
            kind = due(now, [(t, at) for _, t, at in found], checks, own.get(platform_id))
            params: dict[str, object] = {"type": kind, "scheduled": True}
            if kind is None:
                labels = expired(now, found)
                if not labels:
                    continue
                kind, params = "expire", {"type": "expire", "labels": labels,
                                          "scheduled": True}
            previous = last.get(kind)
            if previous is not None and previous[1] == "failed" and \
                    now - previous[2] < RETRY_AFTER:
                continue
            starts.append((platform_id, isv_id, params))
            backing_up[host_id] = backing_up.get(host_id, 0) + 1
        gap = min(ROUND / len(starts), GAP) if starts else 0.0
        for k, (platform_id, isv_id, params) in enumerate(starts):
            create_job(session, kind=BACKUP, isv_id=isv_id, platform_id=platform_id,
                       params=params, priority=jobs.ROUTINE,
                       start_at=now + dt.timedelta(seconds=gap * k))
            session.commit()


def _recent(session: Session, *, since: dt.datetime
            ) -> dict[str, dict[str, tuple[dt.datetime | None, str, dt.datetime]]]:
    """platform id → backup job type → (when the last one that succeeded was created, the
    state and creation time of the last one), over the backup jobs created since `since`
    (older ones cannot change what is due: every interval is shorter)."""
    kind = Job.params["type"].as_string()
    ok = func.max(Job.created_at).filter(Job.state == "succeeded")
    last = (select(Job.platform_id, kind.label("type"), ok.label("ok"),
                   func.max(Job.id).label("last_id"))
            .where(Job.kind == BACKUP.name, Job.created_at >= since,
                   Job.platform_id.is_not(None))
            .group_by(Job.platform_id, kind).subquery())
    rows = session.execute(select(last.c.platform_id, last.c.type, last.c.ok, Job.state,
                                  Job.created_at).join(Job, Job.id == last.c.last_id))
    out: dict[str, dict[str, tuple[dt.datetime | None, str, dt.datetime]]] = {}
    for platform_id, type_, ok_at, state, created in rows:
        out.setdefault(platform_id, {})[type_] = (ok_at, state, created)
    return out


# ---------------------------------------------------------------- clone


def step_place_clone(ctx: StepContext) -> None:
    """Placed like a new platform, with its own repository, and asking in the same write
    for its cluster to be restored from the source's backups instead of made empty."""
    source_id = str(ctx.params["source"])
    target = ctx.params.get("target")

    def also(session: Session, platform: Platform, want: DesiredState) -> None:
        source = session.get(Platform, source_id)
        if source is None or source.desired.backup is None:
            raise StepFailed("the platform to clone is gone, or has no backups")
        stored = backing.configured(ctx.runtime.settings, ctx.runtime.secrets, session,
                                    platform)
        want.backup = stored or want.backup
        want.restore = RestoreTask(id=f"c{ctx.job_id}", source=source.desired.backup.repo,
                                   source_stanza=source.id,
                                   target=float(cast(float, target)) if target is not None
                                   else None)

    step_place(ctx, also=also)


def _cloned(ctx: StepContext) -> None:
    assert CREATE.on_success is not None
    CREATE.on_success(ctx)


CLONE = JobKind(name="clone", steps=(("place", step_place_clone), *CREATE_STEPS[1:]),
                on_success=_cloned, on_failure=CREATE.on_failure)

# ---------------------------------------------------------------- recovery onto another host


def step_place_recovery(ctx: StepContext) -> None:
    target = ctx.params.get("target")
    place_elsewhere(ctx, RestoreTask(id=f"v{ctx.job_id}", target=float(cast(float, target))
                                     if target is not None else None))


def place_elsewhere(ctx: StepContext, restore: RestoreTask, *,
                    drop_drill: bool = False) -> None:
    """The platform moves to the job's host: the lost host's ports are given up, new ones
    taken, and the first desired state there asks, in the same write, for the cluster to
    be restored from the platform's own repository instead of made empty. The lost host,
    should it come back, no longer finds the platform in its desired state and stops what
    is left of it there."""
    host_id = str(ctx.params["host"])
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        if platform.desired.placed_by == ctx.job_id and platform.host_id == host_id:
            return
        host = session.get(Host, host_id)
        if host is None or host.state != "online":
            raise StepFailed("the host chosen for the recovery is no longer online")
        lost, old = platform.host, platform.desired
        for row in session.scalars(select(PortAllocation).where(
                PortAllocation.platform_id == platform.id)):
            session.delete(row)
        session.flush()
        platform.host = host
        platform.desired_at = None  # a stamp of another host's generations
        db = old.db or DatabaseSpec(port=0)
        db_port = allocate_ports(session, host, platform.id, "db", 1)[0]
        web = allocate_ports(session, host, platform.id, "slot-a",
                             WEB_PROCESSES[platform.size])
        platform.desired = DesiredState(
            gen=old.gen, db=db.model_copy(update={"port": db_port}),
            releases=[platform.release_id],
            slots={"a": DesiredSlot(release_id=platform.release_id, ports=web)},
            backup=old.backup, backup_tasks=[])
        if lost is not None:
            lost.generation += 1  # its agent, if it ever answers, drops the platform
        session.commit()

    def also(session: Session, platform: Platform, want: DesiredState) -> None:
        stored = backing.configured(ctx.runtime.settings, ctx.runtime.secrets, session,
                                    platform)
        want.backup = stored or want.backup
        want.restore = restore
        if drop_drill:
            want.drill = None

    step_place(ctx, also=also)


def _recovered(ctx: StepContext) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        platform.state, platform.error = "ready", None
        host = platform.host.name if platform.host else "?"
        emit(session, "RECOVERED", f"{platform.isv.name}/{platform.name} recovered on host "
             f"{host} from its repository, to {_when(ctx)}", isv_id=platform.isv_id,
             platform_id=platform.id, host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


def _recover_failed(ctx: StepContext, reason: str) -> None:
    with ctx.runtime.sessions() as session:
        platform = load_platform(session, ctx)
        platform.state, platform.error = "failed", f"recovery failed: {reason}"
        emit(session, "RECOVER_FAILED", f"recovery of {platform.isv.name}/{platform.name} "
             f"failed: {reason}", isv_id=platform.isv_id, platform_id=platform.id,
             host_id=platform.host_id, job_id=ctx.job_id)
        session.commit()


RECOVER = JobKind(name="recover", steps=(("place", step_place_recovery), *CREATE_STEPS[1:]),
                  on_success=_recovered, on_failure=_recover_failed)

KINDS = (BACKUP, RESTORE, DRILL, CLONE, RECOVER)
PERIODIC = (Periodic("back up and check platforms on schedule", run_schedule, every=ROUND,
                     retry_every=60.0), PURGE)
