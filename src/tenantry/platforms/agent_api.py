"""The routes a host agent calls: enroll, fetch desired state (long poll), report, bundles."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from tenantry.api.agent_tls import client_common_name
from tenantry.api.deps import AGENT, Public, RuntimeDep, SessionDep, bearer_token, declares
from tenantry.core.ca import check_csr
from tenantry.core.errors import InvalidInput, NotFound, Unauthenticated
from tenantry.core.runtime import Runtime
from tenantry.platforms import hosts
from tenantry.platforms.contract import WIRE, DesiredHost, HostReport
from tenantry.platforms.models import Host
from tenantry.platforms.schemas import EnrollRequest, EnrollResponse

router = APIRouter(prefix="/agent", tags=["agent"])
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@declares(AGENT)
def get_host(request: Request, session: SessionDep) -> Host:
    """The calling host, by its agent token (a person's token is refused: 401).

    On the agent TLS listener the client certificate must name the same host: a stolen
    token alone opens nothing there (see api.agent_tls).
    """
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("an agent token is required (Authorization: Bearer ...)")
    host = hosts.authenticate_agent(session=session, token=token)
    over_tls, common_name = client_common_name(request.scope)
    if over_tls and common_name != host.id:
        raise Unauthenticated("this listener needs the host's own client certificate "
                              "(mutual TLS)")
    return host


HostDep = Annotated[Host, Depends(get_host)]


@router.post("/enroll", status_code=status.HTTP_201_CREATED, dependencies=[Public])
def enroll(spec: EnrollRequest, request: Request, session: SessionDep,
           runtime: RuntimeDep) -> EnrollResponse:
    """Public: the one-time enrollment token in the body is the credential. On the agent
    TLS listener a CSR is required, and the answer carries the host's client certificate."""
    over_tls, _ = client_common_name(request.scope)
    if over_tls and not spec.csr:
        raise InvalidInput("enrolling over mutual TLS needs a csr", field="csr")
    if spec.csr:
        check_csr(spec.csr)  # before the one-time token is spent
    host_id, token = hosts.enroll(
        session=session, enroll_token=spec.token, name=spec.name, region=spec.region,
        address=spec.address, ingress_port=spec.ingress_port, port_min=spec.port_min,
        port_max=spec.port_max)
    certificate = runtime.ca.sign_client_csr(spec.csr, host_id) if spec.csr else None
    return EnrollResponse(host_id=host_id, agent_token=token, client_certificate=certificate)


def _generation(runtime: Runtime, host_id: str) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(Host.generation).where(Host.id == host_id)) or 0)


@router.get("/desired", response_model=DesiredHost)
async def desired(host: HostDep, runtime: RuntimeDep,
                  generation: Annotated[int, Query(ge=0)] = 0,
                  wait: Annotated[float, Query(ge=0, le=30)] = 0) -> Response:
    """The host's desired state; with `wait`, held until it differs from `generation`.

    Serialized here with the WIRE context, the one place secrets are written in clear
    (FastAPI's own serialization would mask them).
    """
    deadline = asyncio.get_running_loop().time() + wait
    while (await asyncio.to_thread(_generation, runtime, host.id) == generation
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.1)

    def build() -> DesiredHost:
        with runtime.sessions() as session:
            fresh = session.get(Host, host.id)
            assert fresh is not None
            return hosts.desired_state(session=session, host=fresh, secrets=runtime.secrets)

    document = await asyncio.to_thread(build)
    return Response(document.model_dump_json(context=WIRE), media_type="application/json")


@router.post("/report", status_code=status.HTTP_204_NO_CONTENT)
def report(host: HostDep, session: SessionDep, body: HostReport) -> None:
    """What the agent observed; a report that does not validate answers 422 naming the field."""
    hosts.record_report(session=session, host=host, report=body)


@router.get("/bundles/{digest}")
def bundle(digest: str, host: HostDep, runtime: RuntimeDep) -> FileResponse:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInput("digest must be sha256:<64 hex>", field="digest")
    path = runtime.bundle_dir / f"{digest.removeprefix('sha256:')}.tar.gz"
    if not path.exists():
        raise NotFound(f"no bundle {digest}", field="digest")
    return FileResponse(path, media_type="application/gzip")


