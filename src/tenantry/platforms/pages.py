"""Platform pages: the list with filters, the new-platform form, the live detail page and
its support-access form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Path, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.access.support import service as support_service
from tenantry.access.support.pages import support_section
from tenantry.access.support.schemas import MAX_HOURS, SupportGrantCreate
from tenantry.api.deps import RuntimeDep, SessionDep
from tenantry.platforms import activity, hosts, service
from tenantry.platforms.schemas import PlatformCreate, PlatformFilter, PlatformPublic
from tenantry.portal.web import (
    FormErrors,
    PageAdmin,
    PageOperator,
    PageViewer,
    check_csrf,
    form_value,
    page_router,
    render,
    submit,
)

router = page_router()
FormStr = Annotated[str, Form()]
# the grant form's fields, and what to say when pydantic refuses one
SUPPORT_ERRORS = {"hours": f"a whole number of hours, 1 to {MAX_HOURS}",
                  "reason": "say why, in 3 to 500 characters"}
FORM_FIELDS = ("isv", "tenants", "app", "name", "region", "size")
STATES = ("creating", "ready", "upgrading", "stopping", "stopped", "starting", "destroying",
          "failed")


def _regions(session: Session, principal: Principal, rows: list[PlatformPublic]) -> list[str]:
    """Regions with a host (provider view), else the regions the caller's platforms are in."""
    if principal.is_provider:
        return sorted({h.region for h in hosts.list_hosts(session=session, principal=principal)})
    return sorted({p.region for p in rows})


@router.get("/")
def platform_list(request: Request, session: SessionDep, principal: PageViewer,
                  runtime: RuntimeDep, isv: str = "", tenant: str = "", region: str = "",
                  state: str = "") -> Response:
    filters = PlatformFilter(isv=form_value(isv), tenant=form_value(tenant),
                             region=form_value(region), state=form_value(state))
    rows = service.list_platforms(session=session, principal=principal, filters=filters,
                                  domain=runtime.settings.domain)
    isvs = [i.name for i in service.list_isvs(session=session, principal=principal)]
    if filters.isv in isvs:
        tenants = [t.name for t in service.list_tenants(session=session, principal=principal,
                                                        isv=filters.isv or "")]
    else:
        tenants = sorted({t for p in rows for t in p.tenants})
    return render(request, "platforms.html", principal=principal, platforms=rows,
                  filters=filters, isvs=isvs, tenants=tenants, states=STATES,
                  regions=_regions(session, principal, rows),
                  filtered=any(filters.model_dump().values()))


def _new_form(request: Request, session: Session, principal: Principal,
              values: dict[str, str], errors: dict[str, str], status_code: int = 200
              ) -> Response:
    isvs = [i.name for i in service.list_isvs(session=session, principal=principal)]
    chosen = values.get("isv") or (isvs[0] if isvs else "")
    releases, tenants = [], []
    if chosen in isvs:
        releases = [f"{r.app}@{r.version}" for r in
                    service.list_releases(session=session, principal=principal, isv=chosen)]
        tenants = [t.name for t in service.list_tenants(session=session, principal=principal,
                                                        isv=chosen)]
    values = {**values, "isv": chosen}
    return render(request, "platform_new.html", principal=principal, status_code=status_code,
                  isvs=isvs, releases=list(reversed(releases)), tenants=tenants,
                  regions=_regions(session, principal, []), values=values, errors=errors)


@router.get("/platforms/new")
def new_platform_form(request: Request, session: SessionDep, principal: PageViewer,
                      isv: str = "") -> Response:
    return _new_form(request, session, principal, {"isv": isv, "size": "s"}, {})


@router.post("/platforms/new")
def new_platform(request: Request, session: SessionDep, principal: PageOperator,
                 runtime: RuntimeDep, csrf: FormStr = "", isv: FormStr = "",
                 tenants: FormStr = "", app: FormStr = "", name: FormStr = "",
                 region: FormStr = "", size: FormStr = "s") -> Response:
    check_csrf(request, csrf)
    values = {"isv": isv, "tenants": tenants, "app": app, "name": name, "region": region,
              "size": size}
    tenant_list = [t for t in tenants.replace(" ", ",").split(",") if t]
    made = submit(lambda: service.create_platform(
        session=session, principal=principal, isv=isv.strip(),
        spec=PlatformCreate.model_validate({
            "tenants": tenant_list, "app": app.strip(), "name": form_value(name),
            "region": form_value(region), "size": size.strip() or "s"}),
        secrets=runtime.secrets, domain=runtime.settings.domain), FORM_FIELDS)
    if isinstance(made, FormErrors):
        if "tenants" in made.errors and not tenant_list:
            made.errors["tenants"] = "name at least one tenant"
        return _new_form(request, session, principal, values, made.errors, made.status)
    platform, _job = made
    return RedirectResponse(f"/platforms/{platform.id}", status_code=303)


def _live_context(session: Session, principal: Principal, platform_id: str,
                  domain: str) -> dict[str, Any]:
    platform = service.platform_public(service.get_platform(session, principal, platform_id),
                                       domain)
    jobs = activity.list_jobs(session=session, principal=principal, platform_id=platform.id,
                              limit=5)
    events = activity.list_events(session=session, principal=principal,
                                  platform_id=platform.id, limit=15)
    return {"platform": platform, "jobs": jobs, "events": list(reversed(events))}


def _detail(request: Request, session: Session, principal: Principal, platform_id: str,
            domain: str, *, support_values: dict[str, str] | None = None,
            support_errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    context = _live_context(session, principal, platform_id, domain)
    support = support_section(session, principal, context["platform"],
                              values=support_values, errors=support_errors)
    return render(request, "platform.html", principal=principal, status_code=status_code,
                  support=support, **context)


@router.get("/platforms/{platform_id}")
def platform_detail(request: Request, session: SessionDep, principal: PageViewer,
                    runtime: RuntimeDep, platform_id: str) -> Response:
    return _detail(request, session, principal, platform_id, runtime.settings.domain)


@router.post("/platforms/{platform_id}/support")
def platform_support_grant(request: Request, session: SessionDep, principal: PageAdmin,
                           runtime: RuntimeDep, platform_id: str, csrf: FormStr = "",
                           hours: FormStr = "", reason: FormStr = "") -> Response:
    """An ISV admin lets the provider in; bad input comes back next to its field."""
    check_csrf(request, csrf)
    values = {"hours": hours, "reason": reason}
    done = submit(lambda: support_service.grant_support(
        session=session, principal=principal, spec=SupportGrantCreate.model_validate(
            {"platform": platform_id, "hours": hours.strip(), "reason": reason})),
        SUPPORT_ERRORS)
    if isinstance(done, FormErrors):
        if done.status == 422:  # the form's own wording for its fields
            done.errors = {f: SUPPORT_ERRORS.get(f, m) for f, m in done.errors.items()}
        return _detail(request, session, principal, platform_id, runtime.settings.domain,
                       support_values=values, support_errors=done.errors,
                       status_code=done.status)
    return RedirectResponse(f"/platforms/{platform_id}#support", status_code=303)


@router.get("/platforms/{platform_id}/live")
def platform_live(request: Request, session: SessionDep, principal: PageViewer,
                  runtime: RuntimeDep, platform_id: str) -> Response:
    context = _live_context(session, principal, platform_id, runtime.settings.domain)
    return render(request, "_platform_live.html", principal=principal, **context)


# ---------------------------------------------------------------- jobs and events

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
