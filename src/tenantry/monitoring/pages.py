"""The NOC console in the portal (filled in below)."""

from __future__ import annotations

from tenantry.portal.web import page_router

router = page_router()
