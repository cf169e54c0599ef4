"""The backups API: `/platforms/{isv}/{name}/backups...` and `/isvs/{isv}/backup-keys`."""

from __future__ import annotations

from fastapi import APIRouter, status

from tenantry.api.deps import AdminDep, OperatorDep, RuntimeDep, SessionDep, ViewerDep
from tenantry.backups import service
from tenantry.backups.schemas import (
    BackupAccepted,
    BackupKeys,
    BackupPublic,
    BackupRun,
    BackupWindow,
    RestoreRequest,
)

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


@router.post("/platforms/{isv}/{name}/restore", status_code=status.HTTP_202_ACCEPTED,
             tags=["backups"])
def restore(isv: str, name: str, spec: RestoreRequest, session: SessionDep,
            principal: OperatorDep) -> BackupAccepted:
    platform, job_id = service.restore(session=session, principal=principal,
                                       ref=f"{isv}/{name}", spec=spec)
    return BackupAccepted(platform=platform, job_id=job_id)


@router.get("/isvs/{isv}/backup-keys", tags=["backups"])
def export_keys(isv: str, session: SessionDep, principal: AdminDep,
                runtime: RuntimeDep) -> BackupKeys:
    return service.export_keys(session=session, principal=principal, secrets=runtime.secrets,
                               isv=isv)
