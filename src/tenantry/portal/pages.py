"""The portal: server-rendered pages (Jinja2 + htmx) over the same services as the API."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from tenantry.access.audit import pages as audit_pages
from tenantry.portal import (
    account_pages,
    activity_pages,
    auth_pages,
    platform_pages,
    support_pages,
    user_pages,
)
from tenantry.portal.web import HERE, CsrfRejected, LoginRequired, SetupRequired, error_page


def mount(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth_pages, account_pages, platform_pages, activity_pages, audit_pages,
                   user_pages, support_pages):
        app.include_router(module.router)

    async def login_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"/login?next={quote(target, safe='')}" if target != "/" else "/login"
        if request.headers.get("hx-request"):  # a polling fragment: send the whole tab there
            return Response(status_code=204, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    async def csrf_rejected(request: Request, exc: Exception) -> Response:
        return error_page(request, 403, "form expired",
                           "The form's security token is missing or stale. "
                           "Reload the page and try again.")

    async def setup_required(request: Request, exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/account/setup"})
        return RedirectResponse("/account/setup", status_code=303)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(SetupRequired, setup_required)
    app.add_exception_handler(CsrfRejected, csrf_rejected)
