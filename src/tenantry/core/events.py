"""Events: what happened, when, to which ISV, platform and host."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tenantry.core.models import Event

KINDS = frozenset({
    "PLATFORM_CREATED", "DEPLOYED", "UPGRADED", "UPGRADE_FAILED", "ROLLED_BACK", "STOPPED",
    "STARTED", "DESTROYED", "PLATFORM_FAILED", "HOST_ENROLLED", "HOST_ONLINE", "HOST_OFFLINE",
    "HOST_REVOKED",
    "RELEASE_UPLOADED", "ISV_CREATED", "TENANT_CREATED", "PORTS_MOVED",
    "CERT_EXPIRING",
    "ALERT", "ALERT_RESOLVED", "MAINTENANCE",
    "BACKUP", "BACKUP_FAILED", "BACKUP_REQUESTED", "BACKUP_KEY_EXPORTED", "ARCHIVE_FAILING",
    "RESTORE", "RESTORE_FAILED", "DRILL", "DRILL_FAILED", "RECOVERED", "RECOVER_FAILED",
    "BACKUP_SCHEDULE", "BACKUP_REPOSITORY_DELETED",
    "PROCESS_RESTARTED", "PLATFORM_DEGRADED", "PLATFORM_RECOVERED", "DISK_LOW", "DISK_OK",
})


def emit(session: Session, kind: str, message: str, *, isv_id: str | None = None,
         platform_id: str | None = None, host_id: str | None = None,
         job_id: int | None = None) -> None:
    """Add an event to the caller's transaction; it is stored when the use case commits."""
    assert kind in KINDS, kind
    session.add(Event(kind=kind, message=message, isv_id=isv_id, platform_id=platform_id,
                      host_id=host_id, job_id=job_id))
