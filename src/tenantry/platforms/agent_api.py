"""The routes a host agent calls: enroll, fetch desired state (long poll), report, bundles."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import text
from sqlalchemy.orm import Session, defer
from starlette.concurrency import run_in_threadpool

from tenantry.api.agent_tls import client_common_name
from tenantry.api.deps import (
    AGENT,
    Public,
    RuntimeDep,
    SessionDep,
    bearer_token,
    declares,
    release_connection,
)
from tenantry.core.ca import check_csr
from tenantry.core.errors import InvalidInput, NotFound, Unauthenticated
from tenantry.core.runtime import Runtime
from tenantry.platforms import hosts
from tenantry.platforms.contract import PACE_HEADER, WIRE, DesiredHost, HostReport
from tenantry.platforms.generations import GenerationWatch
from tenantry.platforms.models import Host
from tenantry.platforms.schemas import EnrollRequest, EnrollResponse

router = APIRouter(prefix="/agent", tags=["agent"])
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_WAIT = 60  # s a long poll may ask to be held (the agent asks 55)


@declares(AGENT)
async def get_host_id(request: Request, runtime: RuntimeDep) -> str:
    """The calling host's id, by its agent token (a person's token is refused: 401).

    On the agent TLS listener the client certificate must name the same host: a stolen
    token alone opens nothing there (see api.agent_tls).

    Checked in one trip to a thread, with a session of its own that is closed before the
    route goes on. A sync dependency on the route's session took three (the session's
    start, the check, the session's end), and every trip waits for the GIL behind the other
    requests' threads: at 1,000 hosts (bench/fleet.py) the agents' long polls came back
    0.17 s after their wait at the median, 2 s at p99.
    """
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("an agent token is required (Authorization: Bearer ...)")

    def check() -> str:
        with runtime.sessions() as session:
            host = hosts.authenticate_agent(session=session, token=token)
        over_tls, common_name = client_common_name(request.scope)
        if over_tls and common_name != host.id:
            raise Unauthenticated("this listener needs the host's own client certificate "
                                  "(mutual TLS)")
        return host.id

    return await run_in_threadpool(check)


HostIdDep = Annotated[str, Depends(get_host_id)]


def _host_row(session: Session, host_id: str) -> Host:
    """The host whose token get_host_id checked, as a row of `session` (its observed document
    is read only if used)."""
    host = session.get(Host, host_id, options=[defer(Host.observed)])
    if host is None:  # deleted since its token was checked
        raise Unauthenticated("unknown agent token")
    return host


def get_host(host_id: HostIdDep, session: SessionDep) -> Host:
    """The calling host (see get_host_id) as a row of the route's session."""
    host = _host_row(session, host_id)
    release_connection(session)
    return host


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


_CHANGED = text(
    "SELECT h.id, h.generation FROM hosts AS h"
    " JOIN unnest(CAST(:ids AS varchar[]), CAST(:held AS bigint[])) AS w(id, held)"
    " ON h.id = w.id WHERE h.generation <> w.held")


def _generations(runtime: Runtime, held: Mapping[str, int]) -> dict[str, int]:
    """The hosts whose generation is not the one held: the store compares, and sends back
    only those (a look over a thousand waiting hosts ten times a second moved a thousand
    rows each time). One statement text whatever the number of hosts: prepared once."""
    with runtime.sessions() as session:
        return {h: int(g) for h, g in session.execute(
            _CHANGED, {"ids": list(held), "held": list(held.values())})}


def _watch(request: Request, runtime: Runtime) -> GenerationWatch:
    """The API process's one watch over the generations agents wait on."""
    watch: GenerationWatch | None = getattr(request.app.state, "generation_watch", None)
    if watch is None:
        draining = getattr(request.app.state, "draining", None)  # set by serve-api
        watch = GenerationWatch(partial(_generations, runtime),
                                closing=draining.is_set if draining else lambda: False)
        request.app.state.generation_watch = watch
    return watch


def _etag(generation: int) -> str:
    return f'"{generation}"'


@router.get("/desired", response_model=DesiredHost,
            responses={304: {"description": "Unchanged: the generation in If-None-Match is "
                                            "still the host's (after the wait)"}})
async def desired(host_id: HostIdDep, runtime: RuntimeDep, request: Request,
                  generation: Annotated[int, Query(ge=0)] = 0,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0,
                  since: Annotated[int | None, Query(ge=1)] = None) -> Response:
    """The host's desired state; with `wait`, held until it differs from `generation`.

    With `since`, the generation of the whole document the agent holds, the answer is a
    change to it (`since`, `unchanged`; see DesiredHost): only the platforms whose desired
    state changed after it are built and sent. A `since` this host never had (ahead of its
    generation) gets the whole document.

    An agent that sends `If-None-Match: "<generation>"` (the ETag of the document it holds)
    gets `304 Not Modified`, with no body, when nothing changed within the wait: an idle
    host costs the control plane neither a document nor its secrets' decryption. No store
    connection is held while waiting.

    Serialized here with the WIRE context, the one place secrets are written in clear
    (FastAPI's own serialization would mask them).
    """
    now = await _watch(request, runtime).wait(host_id, generation, wait)
    if now == generation and request.headers.get("if-none-match") == _etag(generation):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED,
                        headers={"ETag": _etag(generation)})

    def build() -> DesiredHost:
        with runtime.sessions() as session:
            return hosts.desired_state_of(session=session, host_id=host_id,
                                          secrets=runtime.secrets, since=since)

    document = await asyncio.to_thread(build)
    return Response(document.model_dump_json(context=WIRE), media_type="application/json",
                    headers={"ETag": _etag(document.generation)})


@router.post("/report", status_code=status.HTTP_204_NO_CONTENT)
async def report(host_id: HostIdDep, body: HostReport, request: Request,
                 runtime: RuntimeDep, response: Response) -> None:
    """What the agent observed; a report that does not validate answers 422 naming the field.

    The answer tells the agent how often to send a heartbeat with nothing new in it
    (`Tenantry-Heartbeat-Interval`, seconds): the slower the larger the fleet (see
    hosts.QUIET_BEATS). Stored in one trip to a thread (see get_host_id)."""
    pace_of = _pace(request)

    def record() -> int:
        with runtime.sessions() as session:
            host = _host_row(session, host_id)
            pace = pace_of.quiet(session)
            hosts.record_report(session=session, host=host, report=body, pace=pace)
            return pace

    response.headers[PACE_HEADER] = str(await run_in_threadpool(record))


def _pace(request: Request) -> hosts.HeartbeatPace:
    """The API process's one pace for quiet heartbeats."""
    pace: hosts.HeartbeatPace | None = getattr(request.app.state, "heartbeat_pace", None)
    if pace is None:
        pace = request.app.state.heartbeat_pace = hosts.HeartbeatPace()
    return pace


@router.get("/bundles/{digest}")
def bundle(digest: str, host_id: HostIdDep, runtime: RuntimeDep) -> FileResponse:
    if not _DIGEST.fullmatch(digest):
        raise InvalidInput("digest must be sha256:<64 hex>", field="digest")
    path = runtime.bundle_dir / f"{digest.removeprefix('sha256:')}.tar.gz"
    if not path.exists():
        raise NotFound(f"no bundle {digest}", field="digest")
    return FileResponse(path, media_type="application/gzip")


