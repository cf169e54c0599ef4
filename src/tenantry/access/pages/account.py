"""Your account: change the password, set up the second factor (required for providers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse

from tenantry.access import service
from tenantry.access.principal import Principal
from tenantry.access.schemas import PasswordChange
from tenantry.api.deps import RuntimeDep, SessionDep
from tenantry.portal.web import FormErrors, PageAccount, check_csrf, page_router, render, submit

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
    done = submit(lambda: service.change_password(
        session=session, principal=principal, spec=PasswordChange(current=current, new=new)),
        ("current", "new"))
    if isinstance(done, FormErrors):
        field, error = next(iter(done.errors.items()))
        return _page(request, session, principal, runtime, status_code=done.status,
                     field=None if field == "_form" else field, error=error)
    return RedirectResponse("/account/setup" if service.setup_required(
        session=session, principal=principal) else "/", status_code=303)


@router.post("/account/totp")
def confirm_totp(request: Request, session: SessionDep, principal: PageAccount,
                 runtime: RuntimeDep, code: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    codes = submit(lambda: service.confirm_totp(session=session, principal=principal,
                                                box=runtime.secrets, code=code.strip()),
                   ("code",))
    if isinstance(codes, FormErrors):
        return _page(request, session, principal, runtime, status_code=codes.status,
                     field="code", error=next(iter(codes.errors.values())))
    return _page(request, session, principal, runtime, codes=codes)
