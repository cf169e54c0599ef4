"""HTTP routes of support access grants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from tenantry.access.support import service
from tenantry.access.support.schemas import SupportGrantCreate, SupportGrantPublic
from tenantry.api.deps import AdminDep, SessionDep, ViewerDep

router = APIRouter(prefix="/support-grants", tags=["support"])


@router.post("", status_code=status.HTTP_201_CREATED)
def grant(spec: SupportGrantCreate, session: SessionDep,
          principal: AdminDep) -> SupportGrantPublic:
    return service.grant_support(session=session, principal=principal, spec=spec)


@router.get("")
def grants(session: SessionDep, principal: ViewerDep,
           all_: Annotated[bool, Query(alias="all")] = False) -> list[SupportGrantPublic]:
    return service.list_grants(session=session, principal=principal, active_only=not all_)


@router.post("/{grant_id}/revoke")
def revoke(grant_id: Annotated[str, PathParam(min_length=1, max_length=20)],
           session: SessionDep, principal: AdminDep) -> SupportGrantPublic:
    return service.revoke_grant(session=session, principal=principal, grant_id=grant_id)
