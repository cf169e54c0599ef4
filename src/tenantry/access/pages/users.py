"""Admins manage their organisation's people: create, change role, disable."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from pydantic import ValidationError

from tenantry.access import service
from tenantry.access.principal import ISV_ROLES, PROVIDER_ROLES, Principal
from tenantry.access.schemas import RoleChange, UserCreate
from tenantry.api.deps import SessionDep
from tenantry.core.errors import TenantryError
from tenantry.platforms.service import list_isvs
from tenantry.portal.web import PageAdmin, check_csrf, page_router, render

router = page_router()
FormStr = Annotated[str, Form()]


def _page(request: Request, session: SessionDep, principal: Principal, *,
          error: str | None = None, field: str | None = None, created: str | None = None,
          password: str | None = None, status_code: int = 200) -> Response:
    users = service.list_users(session=session, principal=principal)
    roles = sorted(PROVIDER_ROLES | ISV_ROLES) if principal.is_provider else sorted(ISV_ROLES)
    isvs = [i.name for i in list_isvs(session=session, principal=principal)]
    return render(request, "users.html", principal=principal, section="users", users=users,
                  roles=roles, isvs=isvs, error=error, field=field, created=created,
                  password=password, status_code=status_code)


@router.get("/users")
def user_list(request: Request, session: SessionDep, principal: PageAdmin) -> Response:
    return _page(request, session, principal)


@router.post("/users")
def user_create(request: Request, session: SessionDep, principal: PageAdmin,
                username: FormStr = "", role: FormStr = "", isv: FormStr = "",
                csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    try:
        spec = UserCreate(username=username.strip(), role=role,
                          isv=isv.strip() or None)
        made = service.create_user(session=session, principal=principal, spec=spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _page(request, session, principal, status_code=422,
                     field=str(first["loc"][0]) if first["loc"] else None,
                     error=str(first["msg"]))
    except TenantryError as exc:
        return _page(request, session, principal, status_code=_status(exc), field=exc.field,
                     error=exc.message)
    return _page(request, session, principal, created=made.user.username,
                 password=made.password)


@router.post("/users/{username}/role")
def user_role(request: Request, session: SessionDep, principal: PageAdmin, username: str,
              role: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    try:
        spec = RoleChange(role=role)
        service.set_role(session=session, principal=principal, username=username, spec=spec)
    except ValidationError:
        return _page(request, session, principal, status_code=422, field="role",
                     error=f"{role!r} is not a role")
    except TenantryError as exc:
        return _page(request, session, principal, status_code=_status(exc), field=exc.field,
                     error=exc.message)
    return _page(request, session, principal)


@router.post("/users/{username}/disable")
def user_disable(request: Request, session: SessionDep, principal: PageAdmin,
                 username: str, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    try:
        service.disable_user(session=session, principal=principal, username=username)
    except TenantryError as exc:
        return _page(request, session, principal, status_code=_status(exc), field=exc.field,
                     error=exc.message)
    return _page(request, session, principal)


def _status(exc: TenantryError) -> int:
    from tenantry.api.errors import STATUS

    return next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
