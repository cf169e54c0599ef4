"""Use cases for reading jobs and events (both are written by the other domains, through
`tenantry.core.jobs` and `tenantry.core.events`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal, scoped
from tenantry.core.errors import NotFound
from tenantry.core.models import Event, Job
from tenantry.platforms.models import Isv, Platform
from tenantry.platforms.schemas import EventPublic, JobPublic, JobStepPublic


def _isv_names(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Isv.id, Isv.name)).tuples().all())


def job_public(job: Job, isvs: dict[str, str], platforms: dict[str, str]) -> JobPublic:
    return JobPublic(
        id=job.id, kind=job.kind, state=job.state,
        isv=isvs.get(job.isv_id or ""), platform_id=job.platform_id,
        platform=platforms.get(job.platform_id or ""), error=job.error,
        created_at=job.created_at, started_at=job.started_at, ended_at=job.ended_at,
        steps=[JobStepPublic(name=s.name, state=s.state, started_at=s.started_at,
                             ended_at=s.ended_at, error=s.error) for s in job.steps])


def _platform_names(session: Session) -> dict[str, str]:
    rows = session.execute(select(Platform.id, Isv.name, Platform.name).join(Isv)).tuples()
    return {pid: f"{isv}/{name}" for pid, isv, name in rows}


def list_jobs(*, session: Session, principal: Principal, platform_id: str | None = None,
              state: str | None = None, limit: int = 50) -> list[JobPublic]:
    query = scoped(select(Job), principal, "view", Job.isv_id, Job.platform_id)
    if platform_id:
        query = query.where(Job.platform_id == platform_id)
    if state:
        query = query.where(Job.state == state)
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit))
    isvs, platforms = _isv_names(session), _platform_names(session)
    return [job_public(j, isvs, platforms) for j in rows]


def get_job(*, session: Session, principal: Principal, job_id: int) -> JobPublic:
    job = session.scalar(scoped(select(Job), principal, "view", Job.isv_id, Job.platform_id)
                         .where(Job.id == job_id))
    if job is None:
        raise NotFound(f"no job {job_id}", field="job")
    return job_public(job, _isv_names(session), _platform_names(session))


def list_events(*, session: Session, principal: Principal, isv_id: str | None = None,
                platform_id: str | None = None, after: int = 0,
                limit: int = 100) -> list[EventPublic]:
    query = scoped(select(Event), principal, "view", Event.isv_id, Event.platform_id)
    if not principal.is_provider:
        query = query.where(Event.isv_id.is_not(None))
    if isv_id:
        query = query.where(Event.isv_id == isv_id)
    if platform_id:
        query = query.where(Event.platform_id == platform_id)
    if after:
        query = query.where(Event.id > after).order_by(Event.id.asc())
    else:
        query = query.order_by(Event.id.desc())
    rows = list(session.scalars(query.limit(limit)))
    if not after:
        rows.reverse()
    isvs = _isv_names(session)
    return [EventPublic(id=e.id, time=e.time, kind=e.kind, message=e.message,
                        isv=isvs.get(e.isv_id or ""), platform_id=e.platform_id,
                        host_id=e.host_id, job_id=e.job_id) for e in rows]
