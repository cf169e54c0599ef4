"""HTTP routes of the SSH CA: certificates for people, configuration and KRL for agents."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse

from tenantry.access.ssh import service
from tenantry.access.ssh.ca import SshCertificateAuthority
from tenantry.access.ssh.schemas import (
    SshCertCreate,
    SshCertIssued,
    SshCertPublic,
    SshHostConfig,
    SshHostEvents,
)
from tenantry.api.deps import OperatorDep, Public, RuntimeDep, SessionDep, ViewerDep
from tenantry.platforms.agent_api import get_host
from tenantry.platforms.models import Host

router = APIRouter(prefix="/ssh", tags=["ssh"])
HostDep = Annotated[Host, Depends(get_host)]


@cache
def _ca(data_dir: Path) -> SshCertificateAuthority:
    return SshCertificateAuthority.load_or_create(data_dir)


def get_ca(runtime: RuntimeDep) -> SshCertificateAuthority:
    return _ca(runtime.settings.data_dir)


CaDep = Annotated[SshCertificateAuthority, Depends(get_ca)]


@router.post("/certs", status_code=status.HTTP_201_CREATED)
def issue(spec: SshCertCreate, session: SessionDep, principal: OperatorDep,
          ca: CaDep) -> SshCertIssued:
    return service.issue_certificate(session=session, principal=principal, ca=ca, spec=spec)


@router.get("/certs")
def certs(session: SessionDep, principal: ViewerDep,
          all_: Annotated[bool, Query(alias="all")] = False) -> list[SshCertPublic]:
    return service.list_certificates(session=session, principal=principal,
                                     active_only=not all_)


@router.post("/certs/{serial}/revoke")
def revoke(serial: Annotated[int, PathParam(ge=1, le=2**63 - 1)], session: SessionDep,
           principal: ViewerDep) -> SshCertPublic:
    """Its owner may, and admins within their scope (the service decides which)."""
    return service.revoke_certificate(session=session, principal=principal, serial=serial)


@router.get("/ca.pub", response_class=PlainTextResponse, dependencies=[Public],
            responses={200: {"content": {"text/plain": {}}}})
def ca_public_key(ca: CaDep) -> Response:
    return Response(ca.public_key_line() + "\n", media_type="text/plain")


@router.get("/agent/config")
def agent_config(host: HostDep, session: SessionDep, ca: CaDep) -> SshHostConfig:
    return service.host_config(session=session, host=host, ca=ca)


@router.get("/krl", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def krl(host: HostDep, session: SessionDep, ca: CaDep) -> Response:
    return Response(service.krl(session=session, ca=ca),
                    media_type="application/octet-stream")


@router.post("/agent/events", status_code=status.HTTP_204_NO_CONTENT)
def agent_events(body: SshHostEvents, host: HostDep, session: SessionDep) -> None:
    service.record_host_events(session=session, host=host, events=body.events)
