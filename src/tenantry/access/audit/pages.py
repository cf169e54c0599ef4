"""Portal pages of the audit log: a filterable list, scoped by organisation."""

from __future__ import annotations

import datetime as dt

from fastapi import Request, Response

from tenantry.access.audit import service
from tenantry.access.audit.schemas import AuditFilter
from tenantry.api.deps import SessionDep
from tenantry.core.errors import InvalidInput
from tenantry.portal.web import PageViewer, form_value, page_router, render

router = page_router()


def _time(value: str, field: str) -> dt.datetime | None:
    text = form_value(value)
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a time (YYYY-MM-DD HH:MM)", field=field) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@router.get("/audit")
def audit_list(request: Request, session: SessionDep, principal: PageViewer,
               actor: str = "", action: str = "", target: str = "", since: str = "",
               until: str = "") -> Response:
    filters = AuditFilter(actor=form_value(actor), action=form_value(action),
                          target=form_value(target), since=_time(since, "since"),
                          until=_time(until, "until"), limit=200)
    entries = service.list_entries(session=session, principal=principal, filters=filters)
    return render(request, "audit.html", principal=principal, entries=entries,
                  actor=actor, action=action, target=target, since=since, until=until)
