"""Admins manage their organisation's people: create, change role, disable."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response

from tenantry.access import service
from tenantry.access.principal import ISV_ROLES, PROVIDER_ROLES, Principal
from tenantry.access.schemas import RoleChange, UserCreate
from tenantry.api.deps import SessionDep
from tenantry.platforms.service import list_isvs
from tenantry.portal.web import FormErrors, PageAdmin, check_csrf, page_router, render, submit

router = page_router()
FIELDS = ("username", "role", "isv")
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
    made = submit(lambda: service.create_user(
        session=session, principal=principal,
        spec=UserCreate(username=username.strip(), role=role, isv=isv.strip() or None)),
        FIELDS)
    if isinstance(made, FormErrors):
        return _refused(request, session, principal, made)
    return _page(request, session, principal, created=made.user.username,
                 password=made.password)


@router.post("/users/{username}/role")
def user_role(request: Request, session: SessionDep, principal: PageAdmin, username: str,
              role: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    done = submit(lambda: service.set_role(session=session, principal=principal,
                                           username=username, spec=RoleChange(role=role)),
                  FIELDS)
    if isinstance(done, FormErrors):
        if done.status == 422 and "role" in done.errors:
            done.errors["role"] = f"{role!r} is not a role"
        return _refused(request, session, principal, done)
    return _page(request, session, principal)


@router.post("/users/{username}/disable")
def user_disable(request: Request, session: SessionDep, principal: PageAdmin,
                 username: str, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    done = submit(lambda: service.disable_user(session=session, principal=principal,
                                               username=username), FIELDS)
    if isinstance(done, FormErrors):
        return _refused(request, session, principal, done)
    return _page(request, session, principal)


def _refused(request: Request, session: SessionDep, principal: Principal,
             refused: FormErrors) -> Response:
    field, error = next(iter(refused.errors.items()))
    return _page(request, session, principal, status_code=refused.status,
                 field=None if field == "_form" else field, error=error)
