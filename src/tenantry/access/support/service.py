"""Use cases of support access: grant, list, revoke, and which grants a host honours now.

A grant belongs to the ISV that owns the platform; only that ISV's admins create one, for a
hands-on platform (the provider already manages hands-off ones), for whole hours with a
reason. It ends by itself at `expires_at`; the ISV or a provider admin may end it sooner.
Either way the platform's host is bumped, so its agent rewrites sudo at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tenantry.access.audit.service import record_for
from tenantry.access.principal import Principal, scoped
from tenantry.access.support.models import SupportGrant
from tenantry.access.support.schemas import SupportGrantCreate, SupportGrantPublic
from tenantry.core.db import utcnow
from tenantry.core.errors import InvalidInput, NotAllowed, NotFound
from tenantry.core.names import new_id
from tenantry.platforms.models import Host, Isv, Platform
from tenantry.platforms.service import get_platform


def _public(grant: SupportGrant, isv: str, platform: str,
            now: dt.datetime | None = None) -> SupportGrantPublic:
    now = now or utcnow()
    return SupportGrantPublic(
        id=grant.id, isv=isv, platform=f"{isv}/{platform}", platform_id=grant.platform_id,
        reason=grant.reason, granted_by=grant.granted_by, created_at=grant.created_at,
        expires_at=grant.expires_at, revoked_at=grant.revoked_at, revoked_by=grant.revoked_by,
        active=grant.revoked_at is None and grant.expires_at > now)


def _wake_host(session: Session, host_id: str | None) -> None:
    if host_id is not None:
        session.execute(update(Host).where(Host.id == host_id)
                        .values(generation=Host.generation + 1))


def grant_support(*, session: Session, principal: Principal,
                  spec: SupportGrantCreate) -> SupportGrantPublic:
    if principal.role != "isv-admin" or principal.platform_id is not None:
        raise NotAllowed("only an admin of the platform's ISV may grant support access")
    reason = spec.reason.strip()
    if len(reason) < 3:
        raise InvalidInput("reason must say why, in 3 to 500 characters", field="reason")
    platform = get_platform(session, principal, spec.platform, "admin")
    if platform.service_level != "hands-on":
        raise InvalidInput(f"platform {platform.isv.name}/{platform.name} is hands-off: the "
                           "provider already manages it", field="platform")
    grant = SupportGrant(id=new_id("sg"), isv_id=platform.isv_id, platform_id=platform.id,
                         reason=reason, granted_by=principal.username,
                         expires_at=utcnow() + dt.timedelta(hours=spec.hours))
    session.add(grant)
    session.flush()
    _wake_host(session, platform.host_id)
    record_for(session, principal, action="support.grant",
               target=f"platform:{platform.isv.name}/{platform.name}", source="api",
               detail={"grant": grant.id, "reason": reason,
                       "expires_at": grant.expires_at.isoformat()})
    session.commit()
    return _public(grant, platform.isv.name, platform.name)


def list_grants(*, session: Session, principal: Principal, active_only: bool = True,
                platform_id: str | None = None) -> list[SupportGrantPublic]:
    query = (scoped(select(SupportGrant), principal, "view", SupportGrant.isv_id,
                    SupportGrant.platform_id)
             .join(Platform, Platform.id == SupportGrant.platform_id)
             .join(Isv, Isv.id == SupportGrant.isv_id)
             .add_columns(Isv.name, Platform.name))
    now = utcnow()
    if active_only:
        query = query.where(SupportGrant.revoked_at.is_(None), SupportGrant.expires_at > now)
    if platform_id is not None:
        query = query.where(SupportGrant.platform_id == platform_id)
    rows = session.execute(query.order_by(SupportGrant.created_at.desc()).limit(500))
    return [_public(grant, isv, platform, now) for grant, isv, platform in rows]


def revoke_grant(*, session: Session, principal: Principal,
                 grant_id: str) -> SupportGrantPublic:
    """End a grant now: the ISV's admins may, and provider admins."""
    if len(grant_id) > 20 or not grant_id.isascii() or not grant_id.isalnum():
        raise NotFound(f"no support grant {grant_id!r}", field="grant")
    found = session.execute(
        scoped(select(SupportGrant), principal, "admin", SupportGrant.isv_id,
               SupportGrant.platform_id)
        .join(Platform, Platform.id == SupportGrant.platform_id)
        .join(Isv, Isv.id == SupportGrant.isv_id)
        .add_columns(Isv.name, Platform.name, Platform.host_id)
        .where(SupportGrant.id == grant_id).with_for_update(of=SupportGrant)).first()
    if found is None:
        raise NotFound(f"no support grant {grant_id!r}", field="grant")
    grant, isv, platform, host_id = found
    if grant.revoked_at is None and grant.expires_at > utcnow():
        grant.revoked_at, grant.revoked_by = utcnow(), principal.username
        _wake_host(session, host_id)
        record_for(session, principal, action="support.revoke",
                   target=f"platform:{isv}/{platform}", source="api", org=grant.isv_id,
                   detail={"grant": grant.id})
        session.commit()
    return _public(grant, isv, platform)


def granted_platforms(session: Session, host_id: str,
                      now: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Platform id → when its support access ends, for the host's live grants."""
    now = now or utcnow()
    rows = session.execute(
        select(SupportGrant.platform_id, SupportGrant.expires_at)
        .join(Platform, Platform.id == SupportGrant.platform_id)
        .where(Platform.host_id == host_id, SupportGrant.revoked_at.is_(None),
               SupportGrant.expires_at > now))
    ends: dict[str, dt.datetime] = {}
    for platform_id, expires_at in rows:
        ends[platform_id] = max(expires_at, ends.get(platform_id, expires_at))
    return ends
