"""Portal pages of people: logging in and out, your own account, and managing users."""

from tenantry.access.pages import account, login, users
from tenantry.portal.web import page_router

router = page_router()
for _module in (login, account, users):
    router.include_router(_module.router)
