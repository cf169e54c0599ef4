"""A platform's backups in the portal: its backups, the recoverable window and the WAL
archive's lag, its drills and restore tests with the RPO and RTO they measured, and a
restore form whose time picker is bounded to the window (operators and admins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.api.deps import SessionDep
from tenantry.backups import service
from tenantry.backups.schemas import RestoreRequest
from tenantry.platforms.service import get_platform
from tenantry.portal.web import (
    FormErrors,
    PageOperator,
    PageViewer,
    check_csrf,
    page_router,
    render,
    submit,
)

router = page_router()
FormStr = Annotated[str, Form()]


def _local(value: dt.datetime | None) -> str:
    """For <input type="datetime-local">: UTC, to the second."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") if value else ""


def _page(request: Request, session: Session, principal: Principal, platform_id: str, *,
          values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
          status_code: int = 200) -> Response:
    platform = get_platform(session, principal, platform_id)
    ref = f"{platform.isv.name}/{platform.name}"
    window = service.window(session=session, principal=principal, ref=ref)
    report = platform.observed.backup if platform.observed else None
    lag = (dt.datetime.now(dt.UTC).timestamp() - report.archived_at
           if report is not None and report.archived_at else None)
    context: dict[str, Any] = {
        "platform": platform, "ref": ref, "window": window, "lag": lag,
        "backups": list(reversed(service.list_backups(session=session, principal=principal,
                                                      ref=ref))),
        "drills": list(reversed(service.list_drills(session=session, principal=principal,
                                                    ref=ref))),
        "may_restore": principal.role in ("isv-admin", "isv-operator", "provider-admin",
                                          "provider-operator"),
        "earliest": _local(window.earliest), "latest": _local(window.latest),
        "values": values or {}, "errors": errors or {},
    }
    return render(request, "backups.html", principal=principal, status_code=status_code,
                  **context)


@router.get("/platforms/{platform_id}/backups")
def backups_page(request: Request, session: SessionDep, principal: PageViewer,
                 platform_id: str) -> Response:
    return _page(request, session, principal, platform_id)


@router.post("/platforms/{platform_id}/backups/restore")
def restore_form(request: Request, session: SessionDep, principal: PageOperator,
                 platform_id: str, csrf: FormStr = "", to_time: FormStr = "",
                 latest: FormStr = "") -> Response:
    """Restore in place; a time outside the window comes back beside the field."""
    check_csrf(request, csrf)
    platform = get_platform(session, principal, platform_id)
    ref = f"{platform.isv.name}/{platform.name}"
    body: dict[str, object] = ({"latest": True} if latest else
                               {"to_time": to_time.strip() or None})
    done = submit(lambda: service.restore(session=session, principal=principal, ref=ref,
                                          spec=RestoreRequest.model_validate(body)),
                  ("to_time",))
    if isinstance(done, FormErrors):
        return _page(request, session, principal, platform_id,
                     values={"to_time": to_time}, errors=done.errors,
                     status_code=done.status)
    return RedirectResponse(f"/jobs/{done[1]}", status_code=303)
