"""Shared portal machinery: templates, who is logged in, and CSRF tokens.

CSRF: every form carries `csrf`, an HMAC (key derived from the master key) of the value it
is bound to — the session cookie once logged in, before that a random `tenantry_csrf`
cookie set by the login page. A cross-site page can make the browser send the cookies but
can neither read them nor compute the HMAC, so it cannot forge the field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from tenantry.access.principal import Principal
from tenantry.access.service import authenticate_token, setup_required
from tenantry.api.deps import (
    SESSION_COOKIE,
    SessionDep,
    declares,
    permission_of,
    release_connection,
)
from tenantry.core.errors import NotAllowed, TenantryError, field_errors

CSRF_COOKIE = "tenantry_csrf"
HERE = Path(__file__).resolve().parent


class LoginRequired(Exception):
    """No valid session cookie: the page answers with a redirect to /login."""


class SetupRequired(Exception):
    """The person must change their password or set up a second factor first."""


class CsrfRejected(Exception):
    """A form came without a valid CSRF token."""


def _time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or dt.datetime.now(dt.UTC)) - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["time"] = _time
templates.env.globals["duration"] = _duration


def page_requires(*actions: str, during_setup: bool = False) -> Callable[..., Principal]:
    """The portal's `requires`: the person behind the session cookie, with their role checked.

    The portal trusts only its own cookie (never a bearer header), so CSRF applies. No
    cookie: a redirect to /login. A first password to change, or a provider role without
    its second factor: a redirect to the set-up, for every page but the account's own
    (`during_setup`). A role that may not do `actions`: 403.
    """
    def allowed(request: Request, session: SessionDep) -> Principal:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise LoginRequired
        try:
            principal = authenticate_token(session=session, token=token)
        except NotAllowed:
            raise LoginRequired from None
        if not during_setup and setup_required(session=session, principal=principal):
            raise SetupRequired
        for action in actions:
            principal.require(action)
        release_connection(session)
        return principal

    permission = permission_of(actions)
    allowed.__name__ = f"page_requires_{permission.replace('+', '_')}"
    return declares(permission)(allowed)


PageViewer = Annotated[Principal, Depends(page_requires("view"))]
PageOperator = Annotated[Principal, Depends(page_requires("operate"))]
PageAdmin = Annotated[Principal, Depends(page_requires("admin"))]
# Your own account: open while the first-login set-up is still to do.
PageAccount = Annotated[Principal, Depends(page_requires(during_setup=True))]


def _csrf_key(request: Request) -> bytes:
    key: bytes | None = getattr(request.app.state, "portal_csrf_key", None)
    if key is None:
        key = request.app.state.runtime.secrets.derive("portal-csrf")
        request.app.state.portal_csrf_key = key
    return key


def _binding(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(CSRF_COOKIE)


def csrf_token(request: Request, binding: str | None = None) -> str:
    bound = binding or _binding(request) or ""
    return hmac.new(_csrf_key(request), bound.encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, token: str, binding: str | None = None) -> None:
    """Raise CsrfRejected unless `token` signs `binding` (default: this request's cookie)."""
    binding = binding or _binding(request)
    if not binding or not token or not hmac.compare_digest(csrf_token(request, binding), token):
        raise CsrfRejected


def new_csrf_binding() -> str:
    return secrets.token_urlsafe(24)


def render(request: Request, name: str, *, principal: Principal | None = None,
           status_code: int = 200, csrf_binding: str | None = None,
           **context: Any) -> HTMLResponse:
    context.update(principal=principal, csrf=csrf_token(request, csrf_binding))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "error.html",
                                      {"title": title, "message": message, "principal": None},
                                      status_code=status)


class PortalRoute(APIRoute):
    """Library errors on a page become an HTML page, not the API's JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except TenantryError as exc:
                return error_page(request, exc.status, exc.code.replace("_", " "),
                                  exc.message)
            except RequestValidationError:
                return error_page(request, 404, "not found", "There is no such page.")

        return portal_handler


T = TypeVar("T")


@dataclass
class FormErrors:
    """Why a form's use case refused: the status to answer and {field: message}, where a
    message that names no field of the form is under "_form"."""

    status: int
    errors: dict[str, str]


def submit(use_case: Callable[[], T], fields: Collection[str]) -> T | FormErrors:
    """Run a form's use case (validation included); its refusal comes back as FormErrors,
    by the same status the API would answer, for the page to show beside each field."""
    try:
        return use_case()
    except ValidationError as exc:
        status, found = 422, field_errors(exc)
    except TenantryError as exc:
        status, found = exc.status, {exc.field or "_form": exc.message}
    errors: dict[str, str] = {}
    for field, message in found.items():
        errors.setdefault(field if field in fields else "_form", message)
    return FormErrors(status, errors)


def form_value(value: str | None) -> str | None:
    """An empty form field or query parameter means 'not given'."""
    value = (value or "").strip()
    return value or None


def page_router() -> APIRouter:
    return APIRouter(route_class=PortalRoute, include_in_schema=False)
