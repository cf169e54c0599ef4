"""Billing in the portal.

`/billing`: an ISV's people see their subscription, this month's active users so far and
the projected invoice, and their past invoices (PDF, CSV of active users); the provider sees
every subscribed ISV with its projection, every invoice, and runs a month's invoices (its
admins). `/billing/quote`: the monthly price of a commitment, line by line.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Form, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.api.deps import SessionDep
from tenantry.billing import pdf, service
from tenantry.billing.schemas import InvoicePublic, Quote
from tenantry.core.errors import InvalidInput, NotFound, TenantryError
from tenantry.platforms.models import Isv
from tenantry.portal.web import (
    FormErrors,
    PageAdmin,
    PageViewer,
    check_csrf,
    form_value,
    page_router,
    render,
    submit,
)

router = page_router()
FormStr = Annotated[str, Form()]


def _projections(session: Session, principal: Principal) -> list[InvoicePublic]:
    """This month's projected invoice of each ISV the principal may see that subscribes."""
    query = select(Isv.name).order_by(Isv.name)
    if not principal.is_provider:
        query = query.where(Isv.id == principal.isv_id)
    out = []
    for name in session.scalars(query):
        try:
            out.append(service.projection(session=session, principal=principal, isv=name))
        except NotFound:
            continue  # no subscription this month
    return out


def _page(request: Request, session: Session, principal: Principal, *,
          values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
          status_code: int = 200, ran: list[InvoicePublic] | None = None) -> Response:
    today = dt.datetime.now(dt.UTC).date()
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    context: dict[str, Any] = {
        "subscriptions": service.list_subscriptions(session=session, principal=principal),
        "projections": _projections(session, principal),
        "invoices": service.list_invoices(session=session, principal=principal),
        "plans": service.list_plans(session=session, principal=principal),
        "may_run": principal.role == "provider-admin",
        "values": values or {"period": last_month}, "errors": errors or {}, "ran": ran,
    }
    return render(request, "billing.html", principal=principal, status_code=status_code,
                  **context)


@router.get("/billing")
def billing_page(request: Request, session: SessionDep, principal: PageViewer) -> Response:
    return _page(request, session, principal)


@router.post("/billing/run")
def run_form(request: Request, session: SessionDep, principal: PageAdmin, csrf: FormStr = "",
             period: FormStr = "") -> Response:
    """Issue a month's invoices; a month not ended comes back beside the field."""
    check_csrf(request, csrf)
    done = submit(lambda: service.run_invoices(session=session, principal=principal,
                                               period=period.strip()), ("period",))
    if isinstance(done, FormErrors):
        return _page(request, session, principal, values={"period": period},
                     errors=done.errors, status_code=done.status)
    return _page(request, session, principal, values={"period": period}, ran=done)


@router.get("/billing/invoices/{invoice_id}")
def invoice_page(request: Request, session: SessionDep, principal: PageViewer,
                 invoice_id: str) -> Response:
    invoice = service.get_invoice(session=session, principal=principal, invoice_id=invoice_id)
    return render(request, "billing_invoice.html", principal=principal, invoice=invoice)


@router.get("/billing/invoices/{invoice_id}/pdf")
def invoice_pdf(session: SessionDep, principal: PageViewer, invoice_id: str) -> Response:
    invoice = service.get_invoice(session=session, principal=principal, invoice_id=invoice_id)
    return Response(pdf.render(invoice), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{invoice.id}.pdf"'})


@router.get("/billing/isvs/{isv}/active-users")
def active_users(session: SessionDep, principal: PageViewer, isv: str,
                 period: str) -> Response:
    body = service.active_users_csv(session=session, principal=principal, isv=isv,
                                    period=period)
    return Response(body, media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{isv}-{period}-active-users.csv"'})


@router.get("/billing/quote")
def quote_page(request: Request, session: SessionDep, principal: PageViewer,
               plan: str | None = None, users: str | None = None, term: str | None = None,
               platforms: str | None = None) -> Response:
    """The form, and the quote once a plan, users and a term are given."""
    values = {"plan": form_value(plan) or "", "users": form_value(users) or "",
              "term": form_value(term) or "", "platforms": form_value(platforms) or "1"}
    found: Quote | None = None
    errors: dict[str, str] = {}
    status = 200
    if values["plan"] and values["users"] and values["term"]:
        try:
            if not values["users"].isdigit():
                raise InvalidInput("users: must be a whole number", field="users")
            if not values["platforms"].isdigit():
                raise InvalidInput("platforms: must be a whole number", field="platforms")
            found = service.quote(session=session, principal=principal, plan=values["plan"],
                                  users=int(values["users"]), term=values["term"],
                                  platforms=int(values["platforms"]))
        except TenantryError as exc:
            errors = {exc.field or "_form": exc.message}
            status = exc.status
    return render(request, "billing_quote.html", principal=principal, status_code=status,
                  quote=found, values=values, errors=errors,
                  plans=service.list_plans(session=session, principal=principal))
