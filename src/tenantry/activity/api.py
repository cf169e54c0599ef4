"""HTTP routes for jobs and events."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from tenantry.activity import service as activity
from tenantry.activity.schemas import EventPublic, JobPublic
from tenantry.api.deps import SessionDep, ViewerDep
from tenantry.platforms import service

router = APIRouter()
MAX_ID = 2**31 - 1  # ids are PostgreSQL integers


@router.get("/jobs", tags=["jobs"])
def list_jobs(session: SessionDep, principal: ViewerDep, platform: str | None = None,
              state: Literal["queued", "running", "succeeded", "failed"] | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobPublic]:
    platform_id = service.get_platform(session, principal, platform).id if platform else None
    return activity.list_jobs(session=session, principal=principal, platform_id=platform_id,
                              state=state, limit=limit)


@router.get("/jobs/{job_id}", tags=["jobs"])
def show_job(job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], session: SessionDep,
             principal: ViewerDep) -> JobPublic:
    return activity.get_job(session=session, principal=principal, job_id=job_id)


@router.get("/events", tags=["events"])
def list_events(session: SessionDep, principal: ViewerDep, isv: str | None = None,
                platform: str | None = None,
                after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[EventPublic]:
    isv_id = service.get_isv(session, principal, isv).id if isv else None
    platform_id = service.get_platform(session, principal, platform).id if platform else None
    return activity.list_events(session=session, principal=principal, isv_id=isv_id,
                                platform_id=platform_id, after=after, limit=limit)
