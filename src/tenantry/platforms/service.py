"""Use cases for ISVs, tenants, releases and platforms. The only place that commits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal, scoped
from tenantry.core.crypto import SecretBox, new_password
from tenantry.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from tenantry.core.events import emit
from tenantry.core.jobs import JobKind, create_job
from tenantry.core.models import Job
from tenantry.core.names import check_name, new_id, parse_app_ref
from tenantry.platforms import jobs, placement
from tenantry.platforms.bundles import store_bundle
from tenantry.platforms.models import App, Host, Isv, Platform, Region, Release, Tenant
from tenantry.platforms.schemas import (
    IsvCreate,
    IsvPublic,
    PlatformCreate,
    PlatformFilter,
    PlatformPublic,
    PlatformUpgrade,
    ReleasePublic,
    TenantCreate,
    TenantPublic,
)

ACTIVE_JOB_STATES = ("queued", "running")


# ---------------------------------------------------------------- ISVs and tenants

def create_isv(*, session: Session, principal: Principal, spec: IsvCreate) -> IsvPublic:
    principal.require("provider")
    principal.require("admin")
    if session.scalar(select(Isv.id).where(Isv.name == spec.name)):
        raise Conflict(f"ISV {spec.name!r} exists already", field="name")
    isv = Isv(id=new_id("i"), name=spec.name)
    session.add(isv)
    emit(session, "ISV_CREATED", f"ISV {spec.name} created", isv_id=isv.id)
    session.commit()
    return IsvPublic(id=isv.id, name=isv.name, created_at=isv.created_at)


def list_isvs(*, session: Session, principal: Principal) -> list[IsvPublic]:
    rows = session.scalars(scoped(select(Isv), principal, "view", Isv.id).order_by(Isv.name))
    return [IsvPublic(id=i.id, name=i.name, created_at=i.created_at) for i in rows]


def get_isv(session: Session, principal: Principal, name: str, action: str = "view") -> Isv:
    check_name(name, field="isv")
    isv = session.scalar(scoped(select(Isv), principal, action, Isv.id).where(Isv.name == name))
    if isv is None:
        raise NotFound(f"no ISV named {name!r}", field="isv")
    return isv


def create_tenant(*, session: Session, principal: Principal, isv: str,
                  spec: TenantCreate) -> TenantPublic:
    owner = get_isv(session, principal, isv, "admin")
    if session.scalar(select(Tenant.id).where(Tenant.isv_id == owner.id,
                                              Tenant.name == spec.name)):
        raise Conflict(f"tenant {spec.name!r} exists already in {isv}", field="name")
    tenant = Tenant(id=new_id("t"), isv_id=owner.id, name=spec.name)
    session.add(tenant)
    emit(session, "TENANT_CREATED", f"tenant {spec.name} created", isv_id=owner.id)
    session.commit()
    return TenantPublic(id=tenant.id, isv=owner.name, name=tenant.name)


def list_tenants(*, session: Session, principal: Principal, isv: str) -> list[TenantPublic]:
    owner = get_isv(session, principal, isv)
    rows = session.scalars(select(Tenant).where(Tenant.isv_id == owner.id).order_by(Tenant.name))
    return [TenantPublic(id=t.id, isv=owner.name, name=t.name) for t in rows]


# ---------------------------------------------------------------- releases

def release_public(release: Release) -> ReleasePublic:
    return ReleasePublic(id=release.id, isv=release.app.isv.name, app=release.app.name,
                         version=release.version, digest=release.digest,
                         processes=sorted(release.manifest.get("processes", {})),
                         created_at=release.created_at)


def release_app(*, session: Session, principal: Principal, isv: str, source: Path,
                bundle_dir: Path) -> ReleasePublic:
    """Validate a bundle, store it content-addressed and record the release."""
    owner = get_isv(session, principal, isv, "operate")
    stored = store_bundle(source, bundle_dir)
    manifest = stored.manifest
    app = session.scalar(select(App).where(App.isv_id == owner.id, App.name == manifest.name))
    if app is None:
        app = App(id=new_id("a"), isv_id=owner.id, name=manifest.name, isv=owner)
        session.add(app)
        session.flush()
    existing = session.scalar(select(Release).where(Release.app_id == app.id,
                                                    Release.version == manifest.version))
    if existing is not None:
        if existing.digest == stored.digest:
            return release_public(existing)  # the same bundle again: nothing to do
        raise Conflict(f"{manifest.name}@{manifest.version} exists already with other content; "
                       "give the new bundle a new version", field="version")
    release = Release(id=new_id("r"), app=app, version=manifest.version, digest=stored.digest,
                      manifest=manifest.model_dump(mode="json"))
    session.add(release)
    emit(session, "RELEASE_UPLOADED", f"release {manifest.name}@{manifest.version} uploaded",
         isv_id=owner.id)
    session.commit()
    return release_public(release)


def list_releases(*, session: Session, principal: Principal, isv: str | None = None,
                  app: str | None = None) -> list[ReleasePublic]:
    query = scoped(select(Release).join(App).join(Isv), principal, "view", App.isv_id)
    if isv:
        query = query.where(Isv.name == check_name(isv, field="isv"))
    if app:
        query = query.where(App.name == check_name(app, field="app"))
    rows = session.scalars(query.order_by(Isv.name, App.name, Release.created_at))
    return [release_public(r) for r in rows]


def find_release(session: Session, isv: Isv, ref: str, *, field: str = "app") -> Release:
    app_name, version = parse_app_ref(ref, field=field)
    release = session.scalar(select(Release).join(App).where(
        App.isv_id == isv.id, App.name == app_name, Release.version == version))
    if release is None:
        raise NotFound(f"{isv.name} has no release {app_name}@{version}; upload it with "
                       "`tenantry app release`", field=field)
    return release


# ---------------------------------------------------------------- platforms

def platform_url(platform: Platform, domain: str) -> str:
    port = platform.host.ingress_port if platform.host else None
    suffix = "" if port in (None, 443) else f":{port}"
    return f"https://{platform.name}.{platform.isv.name}.{domain}{suffix}/"


def platform_public(platform: Platform, domain: str) -> PlatformPublic:
    def ref(release: Release | None) -> str | None:
        return f"{release.app.name}@{release.version}" if release else None

    return PlatformPublic(
        id=platform.id, isv=platform.isv.name, name=platform.name,
        tenants=[t.name for t in platform.tenants], state=platform.state,
        release=ref(platform.release) or "", previous_release=ref(platform.previous_release),
        size=platform.size, service_level=platform.service_level, region=platform.region.name,
        host=platform.host.name if platform.host else None,
        url=platform_url(platform, domain), error=platform.error,
        created_at=platform.created_at, updated_at=platform.updated_at)


def get_platform(session: Session, principal: Principal, ref: str,
                 action: str = "view") -> Platform:
    """A platform by `ISV/NAME` or by id; another ISV's platform does not exist for you."""
    query = scoped(select(Platform).join(Isv), principal, action, Platform.isv_id, Platform.id)
    if "/" in ref:
        isv_name, _, name = ref.partition("/")
        check_name(isv_name, field="platform")
        check_name(name, field="platform")
        query = query.where(Isv.name == isv_name, Platform.name == name)
    else:
        if not ref or len(ref) > 40 or not ref.isascii() or not ref.isalnum():
            raise InvalidInput("platform must be ISV/NAME or a platform id", field="platform")
        query = query.where(Platform.id == ref)
    platform = session.scalar(query)
    if platform is None:
        raise NotFound(f"no platform {ref!r}", field="platform")
    return platform


def list_platforms(*, session: Session, principal: Principal, filters: PlatformFilter,
                   domain: str) -> list[PlatformPublic]:
    query = scoped(select(Platform).join(Isv).join(Region), principal, "view", Platform.isv_id,
                   Platform.id)
    if filters.isv:
        query = query.where(Isv.name == filters.isv)
    if filters.region:
        query = query.where(Region.name == filters.region)
    if filters.state:
        query = query.where(Platform.state == filters.state)
    if filters.tenant:
        query = query.where(Platform.tenants.any(Tenant.name == filters.tenant))
    rows = session.scalars(query.order_by(Isv.name, Platform.name))
    return [platform_public(p, domain) for p in rows]


def _active_job(session: Session, platform_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.platform_id == platform_id,
                                            Job.state.in_(ACTIVE_JOB_STATES)).limit(1))


def create_platform(*, session: Session, principal: Principal, isv: str, spec: PlatformCreate,
                    secrets: SecretBox, domain: str, kind: JobKind = jobs.CREATE,
                    params: dict[str, object] | None = None) -> tuple[PlatformPublic, int]:
    """A new platform and the job that makes it (`kind`: the create job, or another that
    makes it differently, a clone from a backup, say)."""
    owner = get_isv(session, principal, isv, "operate")
    tenants: list[Tenant] = []
    for name in spec.tenants:
        tenant = session.scalar(select(Tenant).where(Tenant.isv_id == owner.id,
                                                     Tenant.name == name))
        if tenant is None:
            raise NotFound(f"{isv} has no tenant {name!r}; create it with `tenantry tenant "
                           "create`", field="tenants")
        tenants.append(tenant)
    release = find_release(session, owner, spec.app)
    name = spec.name or spec.tenants[0]
    if session.scalar(select(Platform.id).where(Platform.isv_id == owner.id,
                                                Platform.name == name)):
        raise Conflict(f"platform {isv}/{name} exists already", field="name")
    region = _region(session, spec.region)
    platform = Platform(id=new_id("p"), isv=owner, name=name, size=spec.size,
                        service_level=spec.service_level, region=region,
                        release=release, tenants=tenants, state="creating",
                        db_password=secrets.encrypt(new_password(), org=owner.id))
    session.add(platform)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"platform {isv}/{name} exists already", field="name") from None
    placement.place(session, platform)
    job = create_job(session, kind=kind, isv_id=owner.id, platform_id=platform.id,
                     params=params)
    emit(session, "PLATFORM_CREATED",
         f"platform {isv}/{name} ({release.app.name}@{release.version}, size {spec.size}) "
         f"requested on {platform.host.name if platform.host else '?'}",
         isv_id=owner.id, platform_id=platform.id, job_id=job.id,
         host_id=platform.host_id)
    session.commit()
    return platform_public(platform, domain), job.id


def _region(session: Session, name: str | None) -> Region:
    if name is None:
        region = session.scalar(
            select(Region).join(Host, Host.region_id == Region.id)
            .where(Host.state == "online").order_by(Region.name).limit(1))
        if region is None:
            raise Unavailable("no host is online to place the platform on", field="region")
        return region
    region = session.scalar(select(Region).where(Region.name == name))
    if region is None:
        raise NotFound(f"no region named {name!r}", field="region")
    return region


def _platform_job(session: Session, principal: Principal, ref: str, kind: JobKind,
                  *, allowed_states: Sequence[str], params: dict[str, object] | None = None,
                  new_state: str) -> tuple[Platform, int]:
    platform = get_platform(session, principal, ref, "operate")
    if _active_job(session, platform.id) is not None:
        raise Conflict(f"platform {platform.isv.name}/{platform.name} is busy with another job",
                       field="platform")
    if platform.state not in allowed_states:
        raise Conflict(f"platform {platform.isv.name}/{platform.name} is {platform.state}; "
                       f"{kind.name} needs it {' or '.join(allowed_states)}", field="platform")
    job = create_job(session, kind=kind, isv_id=platform.isv_id,
                     platform_id=platform.id, params=params)
    platform.state = new_state
    platform.error = None
    return platform, job.id


def upgrade_platform(*, session: Session, principal: Principal, ref: str, spec: PlatformUpgrade,
                     domain: str) -> tuple[PlatformPublic, int]:
    platform = get_platform(session, principal, ref, "operate")
    release = find_release(session, platform.isv, spec.app)
    if release.app_id != platform.release.app_id:
        raise InvalidInput(f"platform runs {platform.release.app.name}, not "
                           f"{release.app.name}", field="app")
    if release.id == platform.release_id:
        raise Conflict(f"platform already runs {spec.app}", field="app")
    platform, job_id = _platform_job(
        session, principal, ref, jobs.UPGRADE, allowed_states=("ready", "degraded"),
        new_state="upgrading",
        params={"release_id": release.id, "migrate": True})
    session.commit()
    return platform_public(platform, domain), job_id


def rollback_platform(*, session: Session, principal: Principal, ref: str,
                      domain: str) -> tuple[PlatformPublic, int]:
    platform = get_platform(session, principal, ref, "operate")
    if platform.previous_release_id is None:
        raise Conflict("platform has no previous release to roll back to", field="platform")
    platform, job_id = _platform_job(
        session, principal, ref, jobs.ROLLBACK, allowed_states=("ready", "degraded"),
        new_state="upgrading",
        params={"release_id": platform.previous_release_id, "migrate": False})
    session.commit()
    return platform_public(platform, domain), job_id


def stop_platform(*, session: Session, principal: Principal, ref: str,
                  domain: str) -> tuple[PlatformPublic, int]:
    platform, job_id = _platform_job(session, principal, ref, jobs.STOP,
                                     allowed_states=("ready", "degraded", "failed"),
                                     new_state="stopping")
    session.commit()
    return platform_public(platform, domain), job_id


def start_platform(*, session: Session, principal: Principal, ref: str,
                   domain: str) -> tuple[PlatformPublic, int]:
    platform, job_id = _platform_job(session, principal, ref, jobs.START,
                                     allowed_states=("stopped",), new_state="starting")
    session.commit()
    return platform_public(platform, domain), job_id


def destroy_platform(*, session: Session, principal: Principal, ref: str,
                     domain: str) -> tuple[PlatformPublic, int]:
    platform, job_id = _platform_job(
        session, principal, ref, jobs.DESTROY,
        allowed_states=("ready", "degraded", "stopped", "failed", "creating"),
        new_state="destroying")
    session.commit()
    return platform_public(platform, domain), job_id
