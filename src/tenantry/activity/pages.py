"""Jobs and events pages; both refresh themselves while open."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from tenantry.activity import service as activity
from tenantry.api.deps import RuntimeDep, SessionDep
from tenantry.platforms import service
from tenantry.platforms.schemas import PlatformFilter
from tenantry.portal.web import PageViewer, form_value, page_router, render

router = page_router()
JOB_STATES = ("queued", "running", "succeeded", "failed")


@router.get("/jobs")
def job_list(request: Request, session: SessionDep, principal: PageViewer,
             state: str = "") -> Response:
    jobs = activity.list_jobs(session=session, principal=principal, state=form_value(state),
                              limit=100)
    return render(request, "jobs.html", principal=principal, jobs=jobs, state=state,
                  states=JOB_STATES)


@router.get("/jobs/{job_id}")
def job_detail(request: Request, session: SessionDep, principal: PageViewer,
               job_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    job = activity.get_job(session=session, principal=principal, job_id=job_id)
    return render(request, "job.html", principal=principal, job=job)


@router.get("/events")
def event_list(request: Request, session: SessionDep, principal: PageViewer,
               runtime: RuntimeDep, isv: str = "", platform: str = "") -> Response:
    isv_name, platform_ref = form_value(isv), form_value(platform)
    isv_id = service.get_isv(session, principal, isv_name).id if isv_name else None
    platform_id = (service.get_platform(session, principal, platform_ref).id
                   if platform_ref else None)
    events = activity.list_events(session=session, principal=principal, isv_id=isv_id,
                                  platform_id=platform_id, limit=200)
    platforms = service.list_platforms(session=session, principal=principal,
                                       filters=PlatformFilter(isv=isv_name),
                                       domain=runtime.settings.domain)
    names = {p.id: f"{p.isv}/{p.name}" for p in platforms}
    return render(request, "events.html", principal=principal, events=list(reversed(events)),
                  isvs=[i.name for i in service.list_isvs(session=session, principal=principal)],
                  platforms=platforms, names=names, isv=isv_name or "",
                  platform=platform_ref or "")
