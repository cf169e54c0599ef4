"""The FastAPI application factory: API under /api/v1, portal pages at /."""

from __future__ import annotations

from fastapi import FastAPI

from tenantry import __version__
from tenantry.access.service import use_secret_box
from tenantry.api import errors
from tenantry.api.deps import Public, document_permissions
from tenantry.core.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    import tenantry.platforms.jobs  # noqa: F401  (registers the job kinds the API queues)
    from tenantry.access.api import router as access_router
    from tenantry.access.audit.api import router as audit_router
    from tenantry.access.audit.middleware import install as install_audit
    from tenantry.access.keys.api import router as keys_router
    from tenantry.access.ssh.api import router as ssh_router
    from tenantry.access.support.api import router as support_router
    from tenantry.platforms.agent_api import router as agent_router
    from tenantry.platforms.api import router as platforms_router
    from tenantry.portal.pages import mount as mount_portal

    app = FastAPI(title="tenantry", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None)
    app.state.runtime = runtime
    use_secret_box(runtime.secrets)
    errors.install(app)
    app.include_router(platforms_router, prefix="/api/v1", responses=errors.ERROR_RESPONSES)
    app.include_router(agent_router, prefix="/api/v1", responses=errors.ERROR_RESPONSES)
    for router in (access_router, audit_router, ssh_router, keys_router, support_router):
        app.include_router(router, prefix="/api/v1", responses=errors.ERROR_RESPONSES)

    @app.get("/api/v1/health", tags=["meta"], dependencies=[Public])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    mount_portal(app)
    install_audit(app, runtime)  # records every mutating request in the audit log
    document_permissions(app)
    return app
