"""Backup use cases: run one, list them, the recoverable window, the ISV's keys."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.backups import jobs
from tenantry.backups.models import BackupSchedule, Drill
from tenantry.backups.schemas import (
    SCHEDULED,
    BackupKeys,
    BackupPublic,
    BackupWindow,
    CheckType,
    CloneRequest,
    DrillPublic,
    DrillRequest,
    FilesPublic,
    RecoverRequest,
    RestoreRequest,
    SchedulePublic,
    ScheduleUpdate,
    parse_interval,
    show_interval,
)
from tenantry.core.crypto import SecretBox
from tenantry.core.errors import Conflict, InvalidInput, NotFound
from tenantry.core.events import emit
from tenantry.core.jobs import create_job
from tenantry.core.models import Job
from tenantry.platforms.backing import isv_files_key, isv_key
from tenantry.platforms.models import Host, Platform, Region
from tenantry.platforms.schemas import PlatformCreate, PlatformPublic
from tenantry.platforms.service import (
    ACTIVE_JOB_STATES,
    create_platform,
    get_isv,
    get_platform,
)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _name(platform: Platform) -> str:
    return f"{platform.isv.name}/{platform.name}"


def run_backup(*, session: Session, principal: Principal, ref: str,
               type_: CheckType) -> tuple[str, int]:
    platform = get_platform(session, principal, ref, "operate")
    if platform.state not in ("ready", "degraded"):
        raise Conflict(f"platform {_name(platform)} is {platform.state}; a backup needs it "
                       "ready", field="platform")
    busy = session.scalar(select(Job.id).where(Job.platform_id == platform.id,
                                               Job.state.in_(ACTIVE_JOB_STATES)).limit(1))
    job = create_job(session, kind=jobs.BACKUP, isv_id=platform.isv_id,
                     platform_id=platform.id, params={"type": type_})
    emit(session, "BACKUP_REQUESTED", f"{type_} backup of {_name(platform)} requested by "
         f"{principal.username}" + (f" (after job {busy})" if busy else ""),
         isv_id=platform.isv_id, platform_id=platform.id, job_id=job.id)
    session.commit()
    return _name(platform), job.id


def _iso(value: dt.datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _target(session: Session, principal: Principal, ref: str, name: str,
            to_time: dt.datetime | None) -> float | None:
    """The Unix time to recover to (None: the latest), refused outside the window."""
    span = window(session=session, principal=principal, ref=ref)
    if span.earliest is None or span.latest is None:
        raise Conflict(f"platform {name} has no backup to restore from yet", field="platform")
    if to_time is None:
        return None
    when = to_time if to_time.tzinfo else to_time.replace(tzinfo=dt.UTC)
    if not span.earliest <= when <= span.latest:
        raise InvalidInput(f"{_iso(when)} is outside the recoverable window of {name}: "
                           f"{_iso(span.earliest)} to {_iso(span.latest)}", field="to_time")
    return when.timestamp()


def clone(*, session: Session, principal: Principal, ref: str, spec: CloneRequest,
          secrets: SecretBox, domain: str) -> tuple[PlatformPublic, int]:
    """A new platform of the same ISV, tenants, release and size, whose database is this
    one's at `to_time` (or the latest), restored from its backups; then backed up itself."""
    source = get_platform(session, principal, ref, "operate")
    target = _target(session, principal, ref, _name(source), spec.to_time)
    create = PlatformCreate(tenants=[t.name for t in source.tenants],
                            app=f"{source.release.app.name}@{source.release.version}",
                            name=spec.name, region=source.region.name, size=source.size,
                            service_level=source.service_level)
    return create_platform(session=session, principal=principal, isv=source.isv.name,
                           spec=create, secrets=secrets, domain=domain, kind=jobs.CLONE,
                           params={"source": source.id, "target": target})


def restore(*, session: Session, principal: Principal, ref: str,
            spec: RestoreRequest) -> tuple[str, int]:
    """Restore the platform in place to a time within its window (or to the latest)."""
    if spec.latest == (spec.to_time is not None):
        raise InvalidInput("give either to_time or latest", field="to_time")
    platform = get_platform(session, principal, ref, "operate")
    name = _name(platform)
    if platform.state not in ("ready", "failed"):
        raise Conflict(f"platform {name} is {platform.state}; a restore needs it ready or "
                       "failed", field="platform")
    if session.scalar(select(Job.id).where(Job.platform_id == platform.id,
                                           Job.state.in_(ACTIVE_JOB_STATES)).limit(1)):
        raise Conflict(f"platform {name} is busy with another job", field="platform")
    target = _target(session, principal, ref, name, spec.to_time)
    job = create_job(session, kind=jobs.RESTORE, isv_id=platform.isv_id,
                     platform_id=platform.id, params={"target": target})
    platform.state, platform.error = "restoring", None
    emit(session, "BACKUP_REQUESTED", f"restore of {name} to "
         f"{_iso(spec.to_time) if spec.to_time else 'the latest archived commit'} requested "
         f"by {principal.username}", isv_id=platform.isv_id, platform_id=platform.id,
         job_id=job.id)
    session.commit()
    return name, job.id


def list_backups(*, session: Session, principal: Principal, ref: str) -> list[BackupPublic]:
    platform = get_platform(session, principal, ref)
    report = platform.observed.backup if platform.observed else None
    snaps = {s.label: s for s in (report.snapshots if report else []) if s.label}
    return [BackupPublic(label=b.label, type=b.type, status="ok",
                         started_at=_utc(b.started_at), finished_at=_utc(b.finished_at),
                         duration_seconds=round(b.finished_at - b.started_at, 1),
                         size=b.size, stored=b.stored,
                         files=FilesPublic(snapshot=snaps[b.label].id[:8],
                                           files=snaps[b.label].files,
                                           size=snaps[b.label].size)
                         if b.label in snaps else None)
            for b in (report.backups if report else [])]


def window(*, session: Session, principal: Principal, ref: str) -> BackupWindow:
    platform = get_platform(session, principal, ref)
    report = platform.observed.backup if platform.observed else None
    if report is None or not report.backups:
        return BackupWindow(platform=_name(platform), earliest=None, latest=None,
                            archive_error=report.archive_error if report else None)
    # pgBackRest keeps a backup's stop time in whole seconds and restores to a time only
    # from a backup that stopped strictly before it: the window opens a second later.
    earliest = report.backups[0].finished_at + 1
    latest = max(report.backups[-1].finished_at + 1, report.archived_at or 0)
    return BackupWindow(platform=_name(platform), earliest=_utc(earliest),
                        latest=_utc(latest), archive_error=report.archive_error)


def export_keys(*, session: Session, principal: Principal, secrets: SecretBox,
                isv: str) -> BackupKeys:
    """An ISV admin's (or the provider admin's) copy of the ISV's passphrases; audited."""
    owner = get_isv(session, principal, isv, "admin")
    cipher = secrets.decrypt(isv_key(session, secrets, owner.id)).get_secret_value()
    files = secrets.decrypt(isv_files_key(session, secrets, owner.id)).get_secret_value()
    emit(session, "BACKUP_KEY_EXPORTED", f"backup keys of ISV {owner.name} exported by "
         f"{principal.username}", isv_id=owner.id)
    session.commit()
    return BackupKeys(isv=owner.name, pgbackrest_cipher_pass=cipher, restic_password=files)


def start_drill(*, session: Session, principal: Principal, ref: str,
                spec: DrillRequest) -> tuple[str, int]:
    """A disaster-recovery drill: a write load, the database destroyed without warning,
    recovered from the repository alone, what came back counted. It recovers onto `host`, or
    another online host of the platform's region; with no other, into fresh directories on
    the same host (the result says so)."""
    platform = get_platform(session, principal, ref, "operate")
    name = _name(platform)
    target = _drill_host(session, platform, spec.host)
    if platform.state != "ready":
        raise Conflict(f"platform {name} is {platform.state}; a drill needs it ready",
                       field="platform")
    if session.scalar(select(Job.id).where(Job.platform_id == platform.id,
                                           Job.state.in_(ACTIVE_JOB_STATES)).limit(1)):
        raise Conflict(f"platform {name} is busy with another job", field="platform")
    report = platform.observed.backup if platform.observed else None
    if report is None or not report.backups:
        raise Conflict(f"platform {name} has no backup to recover from yet", field="platform")
    job = create_job(session, kind=jobs.DRILL, isv_id=platform.isv_id,
                     platform_id=platform.id, params={"seconds": spec.seconds,
                                                      "host": target.id if target else None})
    platform.state, platform.error = "drilling", None
    where = f"on host {target.name}" if target else "in fresh directories on the same host"
    emit(session, "BACKUP_REQUESTED", f"DR drill of {name} requested by "
         f"{principal.username}: its database will be destroyed and recovered {where}",
         isv_id=platform.isv_id, platform_id=platform.id, job_id=job.id)
    session.commit()
    return name, job.id


def _drill_host(session: Session, platform: Platform, name: str | None) -> Host | None:
    """Where a drill recovers: the host named, else another online host of the platform's
    region (the least full), else None: fresh directories on its own host."""
    current = platform.host
    if name is not None:
        host = session.scalar(select(Host).where(Host.name == name))
        if host is None:
            raise InvalidInput(f"no host {name!r}", field="host")
        if current is not None and host.id == current.id:
            return None
        if host.state != "online":
            raise InvalidInput(f"host {name} is {host.state}; a drill recovers onto an "
                               "online host", field="host")
        return host
    if current is None:
        return None
    others = session.scalars(select(Host).where(
        Host.state == "online", Host.id != current.id, Host.region_id == current.region_id)).all()
    if not others:
        return None
    load = {h.id: session.scalar(select(func.count(Platform.id)).where(
        Platform.host_id == h.id)) or 0 for h in others}
    return min(others, key=lambda h: (load[h.id], h.name))


def recover(*, session: Session, principal: Principal, ref: str,
            spec: RecoverRequest) -> tuple[str, int]:
    """Rebuild a platform whose host is gone on another host, from its repository alone:
    same id, name, hostname and backups; its database at `to_time` (or the latest archived
    commit) and the files that go with it. Refused while its host is online (a restore in
    place is what that needs) or busy with another job."""
    platform = get_platform(session, principal, ref, "operate")
    name = _name(platform)
    if spec.host is not None and spec.region is not None:
        raise InvalidInput("give --host or --region, not both", field="host")
    current = platform.host
    if current is not None and current.state == "online":
        raise Conflict(f"host {current.name} of {name} is online; `dr recover` rebuilds a "
                       "platform whose host is gone (for a restore where it is, use `backup "
                       "restore`)", field="platform")
    if platform.state in ("creating", "destroying", "destroyed"):
        raise Conflict(f"platform {name} is {platform.state}", field="platform")
    busy = session.scalar(select(Job.id).where(Job.platform_id == platform.id,
                                               Job.state.in_(ACTIVE_JOB_STATES)).limit(1))
    if busy is not None:
        raise Conflict(f"platform {name} is busy with job {busy} (a job waiting on a lost "
                       "host fails a minute after the host went offline)", field="platform")
    if platform.desired.backup is None:
        raise Conflict(f"platform {name} has no backups to recover from", field="platform")
    target = _target(session, principal, ref, name, spec.to_time)
    host = _recovery_host(session, platform, spec)
    job = create_job(session, kind=jobs.RECOVER, isv_id=platform.isv_id,
                     platform_id=platform.id, params={"host": host.id, "target": target})
    platform.state, platform.error = "recovering", None
    emit(session, "BACKUP_REQUESTED", f"recovery of {name} onto host {host.name} "
         f"(from {current.name if current else 'no host'}) to "
         f"{_iso(spec.to_time) if spec.to_time else 'the latest archived commit'} requested "
         f"by {principal.username}", isv_id=platform.isv_id, platform_id=platform.id,
         host_id=host.id, job_id=job.id)
    session.commit()
    return name, job.id


def _recovery_host(session: Session, platform: Platform, spec: RecoverRequest) -> Host:
    others = select(Host).where(Host.state == "online", Host.id != platform.host_id)
    if spec.host is not None:
        host = session.scalar(select(Host).where(Host.name == spec.host))
        if host is None:
            raise InvalidInput(f"no host {spec.host!r}", field="host")
        if host.id == platform.host_id:
            raise InvalidInput(f"{spec.host} is the host {_name(platform)} is lost with; "
                               "name another", field="host")
        if host.state != "online":
            raise InvalidInput(f"host {spec.host} is {host.state}", field="host")
        return host
    if spec.region is not None:
        region = session.scalar(select(Region).where(Region.name == spec.region))
        if region is None:
            raise InvalidInput(f"no region {spec.region!r}", field="region")
        found = session.scalars(others.where(Host.region_id == region.id)
                                .order_by(Host.name)).first()
        if found is None:
            raise InvalidInput(f"no other host is online in region {spec.region}",
                               field="region")
        return found
    found = session.scalars(others.where(Host.region_id == platform.region.id)
                            .order_by(Host.name)).first()
    if found is None:
        raise InvalidInput(f"no other host is online in region {platform.region.name}; "
                           "name one with --host or --region", field="host")
    return found


def get_schedule(*, session: Session, principal: Principal, ref: str) -> SchedulePublic:
    platform = get_platform(session, principal, ref)
    return _schedule_public(platform, session.get(BackupSchedule, platform.id))


def set_schedule(*, session: Session, principal: Principal, ref: str,
                 spec: ScheduleUpdate) -> SchedulePublic:
    """Change the platform's own intervals (operators); recorded as an event."""
    platform = get_platform(session, principal, ref, "operate")
    row = session.get(BackupSchedule, platform.id)
    if row is None:
        row = BackupSchedule(platform_id=platform.id)
        session.add(row)
    given = spec.model_dump(exclude_unset=True, exclude={"reset"})
    for field in SCHEDULED:
        if spec.reset:
            setattr(row, field, None)
        if field in given:
            value = given[field]
            setattr(row, field, parse_interval(value, field) if value is not None else None)
    row.updated_at, row.updated_by = dt.datetime.now(dt.UTC), principal.username
    shown = _schedule_public(platform, row)
    emit(session, "BACKUP_SCHEDULE", f"backup schedule of {_name(platform)} set by "
         f"{principal.username}: full {shown.full}, diff {shown.diff}, incr {shown.incr}, "
         f"verify {shown.verify}, restore test {shown.restore_test}",
         isv_id=platform.isv_id, platform_id=platform.id)
    session.commit()
    return shown


def _schedule_public(platform: Platform, row: BackupSchedule | None) -> SchedulePublic:
    own = jobs.schedule_of(row) if row is not None else {}
    every = {**jobs.EVERY, **own}
    return SchedulePublic(
        platform=_name(platform),
        **{field: show_interval(int(every[field.replace("_", "-")].total_seconds()))
           for field in SCHEDULED},
        overridden=[f for f in SCHEDULED if f.replace("_", "-") in own])


def drill_public(drill: Drill, name: str) -> DrillPublic:
    return DrillPublic(id=drill.id, platform=name, job_id=drill.job_id, kind=drill.kind,
                       result=drill.result,
                       host=drill.host, same_host=drill.same_host,
                       started_at=drill.started_at, finished_at=drill.finished_at,
                       acked_commits=drill.acked_commits, lost_commits=drill.lost_commits,
                       rpo_seconds=drill.rpo_seconds, rto_seconds=drill.rto_seconds,
                       detail=drill.detail)


def list_drills(*, session: Session, principal: Principal, ref: str) -> list[DrillPublic]:
    platform = get_platform(session, principal, ref)
    rows = session.scalars(select(Drill).where(Drill.platform_id == platform.id)
                           .order_by(Drill.id))
    return [drill_public(d, _name(platform)) for d in rows]


def drill_of_job(*, session: Session, principal: Principal, job_id: int) -> DrillPublic:
    drill = session.scalar(select(Drill).where(Drill.job_id == job_id))
    if drill is None:
        raise NotFound(f"no drill of job {job_id}", field="job")
    platform = get_platform(session, principal, drill.platform_id)
    return drill_public(drill, _name(platform))
