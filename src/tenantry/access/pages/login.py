"""Log in and out: a password exchanged for a short-lived session token in a cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse

from tenantry.access.service import (
    authenticate_password,
    issue_session_token,
    revoke_session_token,
)
from tenantry.access.throttle import LOGINS
from tenantry.api.deps import SESSION_COOKIE, Public, SessionDep
from tenantry.core.errors import NotAllowed
from tenantry.portal.web import (
    CSRF_COOKIE,
    CsrfRejected,
    check_csrf,
    new_csrf_binding,
    page_router,
    render,
)

router = page_router()
FormStr = Annotated[str, Form()]


def _safe_next(target: str) -> str:
    """Only a local path: never let ?next= send the user to another site."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login", dependencies=[Public])
def login_form(request: Request, next: str = "/") -> Response:
    binding = request.cookies.get(CSRF_COOKIE) or new_csrf_binding()
    response = render(request, "login.html", next=_safe_next(next), csrf_binding=binding,
                      error=None, username="")
    response.set_cookie(CSRF_COOKIE, binding, httponly=True, samesite="lax",
                        secure=_secure(request))
    return response


@router.post("/login", dependencies=[Public])
def login(request: Request, session: SessionDep, username: FormStr = "", password: FormStr = "",
          code: FormStr = "", csrf: FormStr = "", next: FormStr = "/") -> Response:
    binding = request.cookies.get(CSRF_COOKIE)
    if not binding:
        raise CsrfRejected
    check_csrf(request, csrf, binding)
    try:
        LOGINS.check(request.client.host if request.client else "unknown")
        principal = authenticate_password(session=session, username=username,
                                          password=password, code=code or None)
    except NotAllowed as exc:
        return render(request, "login.html", status_code=exc.status, next=_safe_next(next),
                      csrf_binding=binding, error=exc.message, username=username)
    token = issue_session_token(session=session, principal=principal)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token.get_secret_value(), max_age=8 * 3600,
                        httponly=True, samesite="lax", secure=_secure(request))
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.post("/logout", dependencies=[Public])
def logout(request: Request, session: SessionDep, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        revoke_session_token(session=session, token=token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
