"""Support access in the portal: the section of a platform's page, ending a grant, and the
provider's list of live grants. The grant form itself posts to the platform page
(platform_pages), which re-renders with the error next to its field."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Form, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.access.support import service
from tenantry.access.support.schemas import MAX_HOURS, SupportGrantPublic
from tenantry.api.deps import SessionDep
from tenantry.platforms.schemas import PlatformPublic
from tenantry.portal.web import PageAdmin, check_csrf, page_requires, page_router, render

router = page_router()
PageProvider = Annotated[Principal, Depends(page_requires("provider"))]
PAST_SHOWN = 5  # ended grants listed under a platform, newest first


@dataclass
class LiveGrant:
    grant: SupportGrantPublic
    left: str  # "1 h 59 min"


@dataclass
class SupportSection:
    """What the platform page shows of support access, and what the viewer may do there."""

    hands_on: bool
    live: list[LiveGrant] = field(default_factory=list)
    past: list[SupportGrantPublic] = field(default_factory=list)
    may_grant: bool = False
    may_end: bool = False
    max_hours: int = MAX_HOURS
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def time_left(until: dt.datetime, now: dt.datetime | None = None) -> str:
    """Whole minutes, rounded up: a grant just made for 2 hours has "2 h" left."""
    seconds = (until - (now or dt.datetime.now(dt.UTC))).total_seconds()
    hours, minutes = divmod(max(0, math.ceil(seconds / 60)), 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def may_end(principal: Principal) -> bool:
    """Who the service lets end a grant: the ISV's admins and provider admins."""
    return principal.role in ("isv-admin", "provider-admin") and principal.platform_id is None


def support_section(session: Session, principal: Principal, platform: PlatformPublic, *,
                    values: dict[str, str] | None = None,
                    errors: dict[str, str] | None = None) -> SupportSection:
    if platform.service_level != "hands-on":
        return SupportSection(hands_on=False, errors=errors or {})
    grants = service.list_grants(session=session, principal=principal, active_only=False,
                                 platform_id=platform.id)
    now = dt.datetime.now(dt.UTC)
    return SupportSection(
        hands_on=True,
        live=[LiveGrant(g, time_left(g.expires_at, now)) for g in grants if g.active],
        past=[g for g in grants if not g.active][:PAST_SHOWN],
        # the service's rule: only the owning ISV's admins grant; the provider never itself
        may_grant=principal.role == "isv-admin" and principal.platform_id is None,
        may_end=may_end(principal),
        values=values or {"hours": "2", "reason": ""}, errors=errors or {})


@router.post("/support/{grant_id}/end")
def support_end(request: Request, session: SessionDep, principal: PageAdmin,
                grant_id: Annotated[str, PathParam(min_length=1, max_length=20)],
                csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    ended = service.revoke_grant(session=session, principal=principal, grant_id=grant_id)
    return RedirectResponse(f"/platforms/{ended.platform_id}#support", status_code=303)


@router.get("/support")
def support_list(request: Request, session: SessionDep, principal: PageProvider) -> Response:
    """Every live grant, for the provider's operators: where they may go now, and why."""
    now = dt.datetime.now(dt.UTC)
    live = [LiveGrant(g, time_left(g.expires_at, now))
            for g in service.list_grants(session=session, principal=principal)]
    return render(request, "support.html", principal=principal, section="support",
                  live=sorted(live, key=lambda row: row.grant.expires_at),
                  may_end=may_end(principal))
