"""HTTP routes of the audit log: list (scoped), verify and ship (provider admins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from tenantry.access.audit import service
from tenantry.access.audit.schemas import (
    AuditEntryPublic,
    AuditFilter,
    AuditHead,
    AuditVerifyReport,
)
from tenantry.api.deps import ProviderAdminDep, RuntimeDep, SessionDep, ViewerDep

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("")
def list_audit(session: SessionDep, principal: ViewerDep, actor: str | None = None,
               action: str | None = None, target: str | None = None,
               since: dt.datetime | None = None, until: dt.datetime | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntryPublic]:
    filters = AuditFilter(actor=actor, action=action, target=target, since=since, until=until,
                          limit=limit)
    return service.list_entries(session=session, principal=principal, filters=filters)


@router.get("/verify")
def verify_audit(principal: ProviderAdminDep, runtime: RuntimeDep) -> AuditVerifyReport:
    service.require_auditor(principal)
    return service.verify_runtime(runtime)


@router.post("/ship")
def ship_audit(session: SessionDep, principal: ProviderAdminDep,
               runtime: RuntimeDep) -> AuditHead:
    service.require_auditor(principal)
    return service.ship_head(session=session, keys=service.keys_of(runtime),
                             store=service.offsite_store(runtime))
