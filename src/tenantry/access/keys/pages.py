"""Portal pages of secrets and site certificates: none yet (the CLI and the API manage them)."""

from tenantry.portal.web import page_router

router = page_router()
