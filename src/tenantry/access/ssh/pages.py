"""Portal pages of SSH certificates: none yet (`tenantry ssh cert` issues them from a shell)."""

from tenantry.portal.web import page_router

router = page_router()
