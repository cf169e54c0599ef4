"""Your account: change the password, set up the second factor (required for providers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from tenantry.access import service
from tenantry.access.principal import Principal
from tenantry.access.schemas import PasswordChange
from tenantry.api.deps import RuntimeDep, SessionDep
from tenantry.core.errors import TenantryError
from tenantry.portal.web import PageAccount, check_csrf, page_router, render

router = page_router()
FormStr = Annotated[str, Form()]


def _page(request: Request, session: SessionDep, principal: Principal, runtime: RuntimeDep,
          *, error: str | None = None, field: str | None = None, codes: list[str] | None = None,
          status_code: int = 200) -> Response:
    todo = service.setup_required(session=session, principal=principal)
    totp = None
    user = service.user_public_of(session=session, principal=principal)
    if "password" not in todo and not user.totp_enabled and codes is None:
        totp = service.pending_totp(session=session, principal=principal, box=runtime.secrets)
    return render(request, "account.html", principal=principal, status_code=status_code,
                  todo=todo, user=user, totp=totp, error=error, field=field, codes=codes)


@router.get("/account/setup")
@router.get("/account")
def account(request: Request, session: SessionDep, principal: PageAccount,
            runtime: RuntimeDep) -> Response:
    return _page(request, session, principal, runtime)


@router.post("/account/password")
def change_password(request: Request, session: SessionDep, principal: PageAccount,
                    runtime: RuntimeDep, current: FormStr = "", new: FormStr = "",
                    csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    try:
        spec = PasswordChange(current=current, new=new)
        service.change_password(session=session, principal=principal, spec=spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _page(request, session, principal, runtime, status_code=422,
                     field=str(first["loc"][0]), error=str(first["msg"]))
    except TenantryError as exc:
        return _page(request, session, principal, runtime, status_code=422, field=exc.field,
                     error=exc.message)
    return RedirectResponse("/account/setup" if service.setup_required(
        session=session, principal=principal) else "/", status_code=303)


@router.post("/account/totp")
def confirm_totp(request: Request, session: SessionDep, principal: PageAccount,
                 runtime: RuntimeDep, code: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    try:
        codes = service.confirm_totp(session=session, principal=principal, box=runtime.secrets,
                                     code=code.strip())
    except TenantryError as exc:
        return _page(request, session, principal, runtime, status_code=422, field="code",
                     error=exc.message)
    return _page(request, session, principal, runtime, codes=codes)
