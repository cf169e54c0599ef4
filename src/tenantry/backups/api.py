"""The backups API: `/platforms/{isv}/{name}/backups...` and `/isvs/{isv}/backup-keys`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from fastapi import Path as PathParam

from tenantry.api.deps import AdminDep, OperatorDep, RuntimeDep, SessionDep, ViewerDep
from tenantry.backups import service
from tenantry.backups.schemas import (
    BackupAccepted,
    BackupKeys,
    BackupPublic,
    BackupRun,
    BackupWindow,
    CloneRequest,
    DrillPublic,
    DrillRequest,
    RecoverRequest,
    RestoreRequest,
    SchedulePublic,
    ScheduleUpdate,
)
from tenantry.platforms.schemas import PlatformAccepted

router = APIRouter()


@router.post("/platforms/{isv}/{name}/backups", status_code=status.HTTP_202_ACCEPTED,
             tags=["backups"])
def run_backup(isv: str, name: str, spec: BackupRun, session: SessionDep,
               principal: OperatorDep) -> BackupAccepted:
    platform, job_id = service.run_backup(session=session, principal=principal,
                                          ref=f"{isv}/{name}", type_=spec.type)
    return BackupAccepted(platform=platform, job_id=job_id)


@router.get("/platforms/{isv}/{name}/backups", tags=["backups"])
def list_backups(isv: str, name: str, session: SessionDep,
                 principal: ViewerDep) -> list[BackupPublic]:
    return service.list_backups(session=session, principal=principal, ref=f"{isv}/{name}")


@router.get("/platforms/{isv}/{name}/backups/window", tags=["backups"])
def backup_window(isv: str, name: str, session: SessionDep,
                  principal: ViewerDep) -> BackupWindow:
    return service.window(session=session, principal=principal, ref=f"{isv}/{name}")


@router.get("/platforms/{isv}/{name}/backups/schedule", tags=["backups"])
def get_schedule(isv: str, name: str, session: SessionDep,
                 principal: ViewerDep) -> SchedulePublic:
    return service.get_schedule(session=session, principal=principal, ref=f"{isv}/{name}")


@router.put("/platforms/{isv}/{name}/backups/schedule", tags=["backups"])
def set_schedule(isv: str, name: str, spec: ScheduleUpdate, session: SessionDep,
                 principal: OperatorDep) -> SchedulePublic:
    return service.set_schedule(session=session, principal=principal, ref=f"{isv}/{name}",
                                spec=spec)


@router.post("/platforms/{isv}/{name}/restore", status_code=status.HTTP_202_ACCEPTED,
             tags=["backups"])
def restore(isv: str, name: str, spec: RestoreRequest, session: SessionDep,
            principal: OperatorDep) -> BackupAccepted:
    platform, job_id = service.restore(session=session, principal=principal,
                                       ref=f"{isv}/{name}", spec=spec)
    return BackupAccepted(platform=platform, job_id=job_id)


@router.post("/platforms/{isv}/{name}/recover", status_code=status.HTTP_202_ACCEPTED,
             tags=["backups"])
def recover(isv: str, name: str, spec: RecoverRequest, session: SessionDep,
            principal: OperatorDep) -> BackupAccepted:
    platform, job_id = service.recover(session=session, principal=principal,
                                       ref=f"{isv}/{name}", spec=spec)
    return BackupAccepted(platform=platform, job_id=job_id)


@router.post("/platforms/{isv}/{name}/clone", status_code=status.HTTP_202_ACCEPTED,
             tags=["platforms"])
def clone_platform(isv: str, name: str, spec: CloneRequest, session: SessionDep,
                   principal: OperatorDep, runtime: RuntimeDep) -> PlatformAccepted:
    platform, job_id = service.clone(session=session, principal=principal,
                                     ref=f"{isv}/{name}", spec=spec, secrets=runtime.secrets,
                                     domain=runtime.settings.domain)
    return PlatformAccepted(platform=platform, job_id=job_id)


@router.get("/isvs/{isv}/backup-keys", tags=["backups"])
def export_keys(isv: str, session: SessionDep, principal: AdminDep,
                runtime: RuntimeDep) -> BackupKeys:
    return service.export_keys(session=session, principal=principal, secrets=runtime.secrets,
                               isv=isv)


@router.post("/platforms/{isv}/{name}/drills", status_code=status.HTTP_202_ACCEPTED,
             tags=["backups"])
def start_drill(isv: str, name: str, spec: DrillRequest, session: SessionDep,
                principal: OperatorDep) -> BackupAccepted:
    platform, job_id = service.start_drill(session=session, principal=principal,
                                           ref=f"{isv}/{name}", spec=spec)
    return BackupAccepted(platform=platform, job_id=job_id)


@router.get("/platforms/{isv}/{name}/drills", tags=["backups"])
def list_drills(isv: str, name: str, session: SessionDep,
                principal: ViewerDep) -> list[DrillPublic]:
    return service.list_drills(session=session, principal=principal, ref=f"{isv}/{name}")


@router.get("/drills/by-job/{job_id}", tags=["backups"])
def drill_of_job(job_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], session: SessionDep,
                 principal: ViewerDep) -> DrillPublic:
    return service.drill_of_job(session=session, principal=principal, job_id=job_id)
