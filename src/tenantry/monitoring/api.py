"""HTTP routes of monitoring: for people (checks, thresholds, contacts, alerts, maintenance,
status, graphs) and for the monitoring programs (service discovery, Alertmanager's webhook),
each with its own bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from tenantry.api.deps import (
    MONITOR,
    AdminDep,
    OperatorDep,
    RuntimeDep,
    SessionDep,
    ViewerDep,
    bearer_token,
    declares,
    release_connection,
)
from tenantry.core.errors import Unauthenticated
from tenantry.core.notify import business_hours
from tenantry.monitoring import discovery, graphs, ingest, local, service
from tenantry.monitoring.models import StackCredential
from tenantry.monitoring.schemas import (
    CHECK,
    NAME,
    PLATFORM,
    AlertPublic,
    CheckPublic,
    ContactCreate,
    ContactPublic,
    MaintenanceCreate,
    MaintenancePublic,
    StatusPublic,
    ThresholdPublic,
    ThresholdSet,
)
from tenantry.monitoring.webhook import WebhookPayload

router = APIRouter(tags=["monitoring"])


def _stack_program(name: str) -> Callable[[Request, Session], str]:
    @declares(MONITOR)
    def authenticated(request: Request, session: SessionDep) -> str:
        token = bearer_token(request)
        row = session.get(StackCredential, name)
        if not token or row is None or not hmac.compare_digest(
                local.hash_token(token), row.token_hash):
            raise Unauthenticated(f"the {name} token of this control plane is required")
        release_connection(session)
        return name
    authenticated.__name__ = f"stack_{name}"
    return authenticated


PrometheusDep = Annotated[str, Depends(_stack_program("prometheus"))]
AlertmanagerDep = Annotated[str, Depends(_stack_program("alertmanager"))]


@router.get("/monitoring/sd/{job}")
def service_discovery(job: Annotated[str, PathParam(max_length=40, pattern=CHECK)],
                      session: SessionDep, _: PrometheusDep) -> list[dict[str, Any]]:
    """Prometheus's HTTP service discovery: one document per job."""
    groups: list[dict[str, Any]] = discovery.sd_document(session, job).model_dump()
    return groups


@router.post("/monitoring/alertmanager", status_code=status.HTTP_200_OK)
def alertmanager_webhook(payload: WebhookPayload, session: SessionDep, runtime: RuntimeDep,
                         _: AlertmanagerDep) -> dict[str, int]:
    """Alertmanager's webhook: alerts enter the history and the outbox."""
    changed = ingest.ingest(session, payload, hours=business_hours(runtime.settings))
    return {"changed": changed}


@router.get("/checks")
def checks(session: SessionDep, principal: ViewerDep) -> list[CheckPublic]:
    return service.list_checks(session=session, principal=principal)


@router.get("/thresholds")
def thresholds(session: SessionDep, principal: ViewerDep,
               check: Annotated[str | None, Query(max_length=40, pattern=CHECK)] = None
               ) -> list[ThresholdPublic]:
    return service.list_thresholds(session=session, principal=principal, check=check)


@router.put("/thresholds")
def set_threshold(spec: ThresholdSet, session: SessionDep,
                  principal: AdminDep) -> ThresholdPublic:
    return service.set_threshold(session=session, principal=principal, spec=spec)


@router.delete("/thresholds", status_code=status.HTTP_204_NO_CONTENT)
def unset_threshold(session: SessionDep, principal: AdminDep,
                    check: Annotated[str, Query(min_length=1, max_length=40, pattern=CHECK)],
                    scope: Annotated[Literal["isv", "host", "platform"], Query()],
                    target: Annotated[str, Query(min_length=1, max_length=81,
                                                 pattern=PLATFORM)]) -> None:
    service.unset_threshold(session=session, principal=principal, check=check, scope=scope,
                            target=target)


@router.get("/contacts")
def contacts(session: SessionDep, principal: ViewerDep) -> list[ContactPublic]:
    return service.list_contacts(session=session, principal=principal)


@router.post("/contacts", status_code=status.HTTP_201_CREATED)
def add_contact(spec: ContactCreate, session: SessionDep, principal: AdminDep) -> ContactPublic:
    return service.add_contact(session=session, principal=principal, spec=spec)


@router.delete("/contacts/{contact_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_contact(contact_id: Annotated[str, PathParam(max_length=20, pattern=NAME)],
                   session: SessionDep, principal: AdminDep) -> None:
    service.remove_contact(session=session, principal=principal, contact_id=contact_id)


@router.get("/alerts")
def alerts(session: SessionDep, principal: ViewerDep,
           platform: Annotated[str | None, Query(max_length=81, pattern=PLATFORM)] = None,
           host: Annotated[str | None, Query(max_length=40, pattern=NAME)] = None,
           check: Annotated[str | None, Query(max_length=40, pattern=CHECK)] = None,
           open_: Annotated[bool, Query(alias="open")] = False,
           since: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9A-Za-z:+. -]+$")]
           = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AlertPublic]:
    return service.list_alerts(session=session, principal=principal, platform=platform,
                               host=host, check=check, open_only=open_, since=since,
                               limit=limit)


@router.get("/alerts/{alert_id}")
def alert(alert_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], session: SessionDep,
          principal: ViewerDep) -> AlertPublic:
    return service.get_alert(session=session, principal=principal, alert_id=alert_id)


@router.get("/maintenance")
def maintenance(session: SessionDep, principal: ViewerDep) -> list[MaintenancePublic]:
    return service.list_maintenance(session=session, principal=principal)


@router.post("/maintenance", status_code=status.HTTP_201_CREATED)
def create_maintenance(spec: MaintenanceCreate, session: SessionDep,
                       principal: OperatorDep) -> MaintenancePublic:
    return service.create_maintenance(session=session, principal=principal, spec=spec)


@router.post("/maintenance/{maintenance_id}/cancel")
def cancel_maintenance(maintenance_id: Annotated[str, PathParam(max_length=20, pattern=NAME)],
                       session: SessionDep, principal: OperatorDep) -> MaintenancePublic:
    return service.cancel_maintenance(session=session, principal=principal,
                                      maintenance_id=maintenance_id)


@router.get("/status")
def status_(session: SessionDep, principal: ViewerDep) -> StatusPublic:
    return service.status(session=session, principal=principal)


@router.get("/monitoring/graph")
def graph(session: SessionDep, principal: ViewerDep, runtime: RuntimeDep,
          check: Annotated[str, Query(min_length=1, max_length=40, pattern=CHECK)],
          host: Annotated[str | None, Query(max_length=40, pattern=NAME)] = None,
          platform: Annotated[str | None, Query(max_length=81, pattern=PLATFORM)] = None,
          range_: Annotated[Literal["1h", "1d", "1w", "1m"], Query(alias="range")] = "1h",
          ) -> graphs.Graph:
    """A check's values over the last hour, day, week or month (from Prometheus)."""
    return graphs.graph(session=session, principal=principal,
                        data_dir=runtime.settings.data_dir, check=check, host=host,
                        platform=platform, span=range_)


