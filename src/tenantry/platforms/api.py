"""HTTP routes for ISVs, tenants, releases, platforms, hosts, jobs and events."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, UploadFile, status
from fastapi import Path as PathParam

from tenantry.api.deps import (
    AdminDep,
    OperatorDep,
    ProviderAdminDep,
    ProviderDep,
    RuntimeDep,
    SessionDep,
    ViewerDep,
)
from tenantry.core.errors import InvalidInput
from tenantry.platforms import activity, agent_api, hosts, service
from tenantry.platforms.schemas import (
    EnrollTokenPublic,
    EventPublic,
    HostPublic,
    IsvCreate,
    IsvPublic,
    JobPublic,
    PlatformAccepted,
    PlatformCreate,
    PlatformFilter,
    PlatformPublic,
    PlatformUpgrade,
    ReleasePublic,
    TenantCreate,
    TenantPublic,
)

router = APIRouter()
MAX_ID = 2**31 - 1  # ids are PostgreSQL integers
MAX_BUNDLE = 512 * 1024 * 1024


@router.post("/isvs", status_code=status.HTTP_201_CREATED, tags=["isvs"])
def create_isv(spec: IsvCreate, session: SessionDep,
               principal: ProviderAdminDep) -> IsvPublic:
    return service.create_isv(session=session, principal=principal, spec=spec)


@router.get("/isvs", tags=["isvs"])
def list_isvs(session: SessionDep, principal: ViewerDep) -> list[IsvPublic]:
    return service.list_isvs(session=session, principal=principal)


@router.post("/isvs/{isv}/tenants", status_code=status.HTTP_201_CREATED, tags=["tenants"])
def create_tenant(isv: str, spec: TenantCreate, session: SessionDep,
                  principal: AdminDep) -> TenantPublic:
    return service.create_tenant(session=session, principal=principal, isv=isv, spec=spec)


@router.get("/isvs/{isv}/tenants", tags=["tenants"])
def list_tenants(isv: str, session: SessionDep, principal: ViewerDep) -> list[TenantPublic]:
    return service.list_tenants(session=session, principal=principal, isv=isv)


@router.post("/isvs/{isv}/releases", status_code=status.HTTP_201_CREATED, tags=["releases"])
def upload_release(isv: str, bundle: UploadFile, session: SessionDep, principal: OperatorDep,
                   runtime: RuntimeDep) -> ReleasePublic:
    """Upload an application bundle (a .tar.gz with `tenantry.toml` at its top)."""
    service.get_isv(session, principal, isv, "operate")  # refuse before reading the upload
    with tempfile.TemporaryDirectory(prefix="upload-", dir=runtime.bundle_dir) as tmp:
        target = Path(tmp) / "bundle.tar.gz"
        with target.open("wb") as out:
            copied = 0
            while chunk := bundle.file.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_BUNDLE:
                    raise InvalidInput("the bundle is larger than 512 MiB", field="bundle")
                out.write(chunk)
        return service.release_app(session=session, principal=principal, isv=isv, source=target,
                                   bundle_dir=runtime.bundle_dir)


@router.get("/releases", tags=["releases"])
def list_releases(session: SessionDep, principal: ViewerDep, isv: str | None = None,
                  app: str | None = None) -> list[ReleasePublic]:
    return service.list_releases(session=session, principal=principal, isv=isv, app=app)


@router.post("/isvs/{isv}/platforms", status_code=status.HTTP_202_ACCEPTED, tags=["platforms"])
def create_platform(isv: str, spec: PlatformCreate, session: SessionDep, principal: OperatorDep,
                    runtime: RuntimeDep) -> PlatformAccepted:
    platform, job_id = service.create_platform(
        session=session, principal=principal, isv=isv, spec=spec, secrets=runtime.secrets,
        domain=runtime.settings.domain)
    return PlatformAccepted(platform=platform, job_id=job_id)


@router.get("/platforms", tags=["platforms"])
def list_platforms(session: SessionDep, principal: ViewerDep, runtime: RuntimeDep,
                   filters: Annotated[PlatformFilter, Query()]) -> list[PlatformPublic]:
    return service.list_platforms(session=session, principal=principal, filters=filters,
                                  domain=runtime.settings.domain)


def _both_forms(method: str, suffix: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register a platform route as /platforms/{id}... and /platforms/{isv}/{name}...

    The handler takes `ref`; the ISV/NAME form is joined into it.
    """
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        import inspect

        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.name != "ref"]

        def by_name(isv: str, name: str, **kw: Any) -> Any:
            return func(ref=f"{isv}/{name}", **kw)

        by_name.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
            inspect.Parameter("isv", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
            inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
            *params])
        by_name.__name__ = f"{func.__name__}_by_name"
        route = getattr(router, method)
        route(f"/platforms/{{isv}}/{{name}}{suffix}", tags=["platforms"], **kwargs)(by_name)
        route(f"/platforms/{{ref}}{suffix}", tags=["platforms"], **kwargs)(func)
        return func
    return decorate


@_both_forms("get", "")
def show_platform(ref: str, session: SessionDep, principal: ViewerDep,
                  runtime: RuntimeDep) -> PlatformPublic:
    platform = service.get_platform(session, principal, ref)
    return service.platform_public(platform, runtime.settings.domain)


@_both_forms("post", "/upgrade", status_code=status.HTTP_202_ACCEPTED)
def upgrade_platform(ref: str, spec: PlatformUpgrade, session: SessionDep,
                     principal: OperatorDep, runtime: RuntimeDep) -> PlatformAccepted:
    platform, job_id = service.upgrade_platform(session=session, principal=principal, ref=ref,
                                                spec=spec, domain=runtime.settings.domain)
    return PlatformAccepted(platform=platform, job_id=job_id)


def _action(name: str, use_case: Callable[..., tuple[PlatformPublic, int]]) -> None:
    def handler(ref: str, session: SessionDep, principal: OperatorDep,
                runtime: RuntimeDep) -> PlatformAccepted:
        platform, job_id = use_case(session=session, principal=principal, ref=ref,
                                    domain=runtime.settings.domain)
        return PlatformAccepted(platform=platform, job_id=job_id)

    handler.__name__ = f"{name}_platform"
    handler.__doc__ = f"{name.capitalize()} the platform (a job does the work)."
    _both_forms("post", f"/{name}", status_code=status.HTTP_202_ACCEPTED)(handler)


_action("rollback", service.rollback_platform)
_action("stop", service.stop_platform)
_action("start", service.start_platform)


@_both_forms("delete", "", status_code=status.HTTP_202_ACCEPTED)
def destroy_platform(ref: str, session: SessionDep, principal: OperatorDep,
                     runtime: RuntimeDep) -> PlatformAccepted:
    platform, job_id = service.destroy_platform(session=session, principal=principal, ref=ref,
                                                domain=runtime.settings.domain)
    return PlatformAccepted(platform=platform, job_id=job_id)


@router.get("/hosts", tags=["hosts"])
def list_hosts(session: SessionDep, principal: ProviderDep) -> list[HostPublic]:
    return hosts.list_hosts(session=session, principal=principal)


@router.post("/hosts/{host}/revoke", tags=["hosts"])
def revoke_host(host: Annotated[str, PathParam(min_length=1, max_length=40)],
                session: SessionDep, principal: ProviderAdminDep) -> HostPublic:
    return hosts.revoke_host(session=session, principal=principal, ref=host)


@router.post("/hosts/enroll-tokens", status_code=status.HTTP_201_CREATED, tags=["hosts"])
def create_enroll_token(session: SessionDep,
                        principal: ProviderAdminDep) -> EnrollTokenPublic:
    return hosts.create_enroll_token(session=session, principal=principal)


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


# The routes a host agent calls live beside the people's, under /agent.
router.include_router(agent_api.router)
