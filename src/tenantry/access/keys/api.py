"""HTTP routes of this package: an ISV's certificates for its own domains."""

from __future__ import annotations

from fastapi import APIRouter, status

from tenantry.access.keys import service
from tenantry.access.keys.schemas import SiteCertificateCreate, SiteCertificatePublic
from tenantry.api.deps import AdminDep, RuntimeDep, SessionDep, ViewerDep

router = APIRouter()


@router.post("/isvs/{isv}/certificates", status_code=status.HTTP_201_CREATED,
             tags=["certificates"])
def upload_certificate(isv: str, spec: SiteCertificateCreate, session: SessionDep,
                       principal: AdminDep, runtime: RuntimeDep) -> SiteCertificatePublic:
    """Upload (or replace) the certificate and key for one of the ISV's domains."""
    return service.upload_certificate(session=session, principal=principal, isv=isv, spec=spec,
                                      secrets=runtime.secrets)


@router.get("/isvs/{isv}/certificates", tags=["certificates"])
def list_certificates(isv: str, session: SessionDep,
                      principal: ViewerDep) -> list[SiteCertificatePublic]:
    return service.list_certificates(session=session, principal=principal, isv=isv)


@router.delete("/isvs/{isv}/certificates/{domain}", status_code=status.HTTP_204_NO_CONTENT,
               tags=["certificates"])
def delete_certificate(isv: str, domain: str, session: SessionDep,
                       principal: AdminDep) -> None:
    service.delete_certificate(session=session, principal=principal, isv=isv, domain=domain)
