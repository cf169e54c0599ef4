"""Backups in the portal (a platform's backups section comes with the restore form)."""

from __future__ import annotations

from tenantry.portal.web import page_router

router = page_router()
