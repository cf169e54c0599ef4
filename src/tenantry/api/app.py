"""The FastAPI application factory: every domain's API under /api/v1, portal pages at /."""

from __future__ import annotations

from fastapi import FastAPI

from tenantry import __version__
from tenantry.api import errors
from tenantry.api.deps import Public, document_permissions
from tenantry.app import api_routers, metadata
from tenantry.core.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    from tenantry.access.audit.middleware import install as install_audit
    from tenantry.portal.pages import mount as mount_portal

    app = FastAPI(title="tenantry", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None)
    app.state.runtime = runtime
    metadata()  # every domain's tables are known, whichever routes this process serves
    errors.install(app)
    for router in api_routers():
        app.include_router(router, prefix="/api/v1", responses=errors.ERROR_RESPONSES)

    @app.get("/api/v1/health", tags=["meta"], dependencies=[Public])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    mount_portal(app)
    install_audit(app, runtime)  # records every mutating request in the audit log
    document_permissions(app)
    return app
