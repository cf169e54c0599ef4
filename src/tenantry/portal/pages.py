"""The portal: server-rendered pages (Jinja2 + htmx) over the same services as the API. Each
domain owns its pages (`tenantry.app.page_routers`); this module mounts them with the
portal's shared answers to a missing login, set-up or CSRF token."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from tenantry.app import page_routers
from tenantry.portal.web import HERE, CsrfRejected, LoginRequired, SetupRequired, error_page


def mount(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in page_routers():
        app.include_router(router)
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
