"""The billing API: usage (`/usage`), plans, subscriptions, invoices and quotes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import TypeAdapter

from tenantry.access.principal import Principal
from tenantry.access.service import authenticate_token
from tenantry.api.deps import (
    AdminDep,
    ProviderAdminDep,
    RuntimeDep,
    SessionDep,
    ViewerDep,
    bearer_token,
    declares,
    release_connection,
)
from tenantry.billing import pdf, service
from tenantry.billing.schemas import (
    InvoicePublic,
    InvoiceRun,
    PlanDocument,
    PlanPublic,
    Quote,
    SubscriptionCreate,
    SubscriptionPublic,
    UsageBatch,
    UsageEventIn,
    UsageResult,
    UsageToken,
    UsageTokenInfo,
)
from tenantry.core.errors import Unauthenticated

router = APIRouter()
USER_KEY = "billing-user-hash"


@dataclass(frozen=True)
class UsageCaller:
    principal: Principal | None = None  # a person's token: operate on the named platform
    platform_id: str | None = None  # a usage token: its platform, nothing else


@declares("operate")
def usage_caller(request: Request, session: SessionDep) -> UsageCaller:
    """A usage token (`tnu_...`, good for `/usage` and nothing else), or a person's API
    token with the right to operate the platform the batch names (what is declared: the
    permission a person needs)."""
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("a usage token or an API token is required (Authorization: "
                              "Bearer ...)")
    if token.startswith(service.USAGE_PREFIX):
        return UsageCaller(platform_id=service.usage_platform(session, token))
    principal = authenticate_token(session=session, token=token)
    principal.require("operate")
    release_connection(session)
    return UsageCaller(principal=principal)


UsageCallerDep = Annotated[UsageCaller, Depends(usage_caller)]


async def raw_body(request: Request) -> bytes:
    return await request.body()


def _usage_body_schema() -> dict[str, Any]:
    """What `/usage` reads, for the API's documentation: a batch, each event in full."""
    schema = UsageBatch.model_json_schema()
    schema["properties"]["events"]["items"] = TypeAdapter(UsageEventIn).json_schema()
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


@router.post("/usage", tags=["billing"], openapi_extra=_usage_body_schema())
def send_usage(body: Annotated[bytes, Depends(raw_body)], session: SessionDep,
               runtime: RuntimeDep, caller: UsageCallerDep) -> UsageResult:
    """Up to 10,000 events; each id counts once per platform, however often it is sent.
    (The body is read as bytes and validated by billing itself, in one pass from the bytes:
    FastAPI's own reading, JSON to Python objects to a model, cost more than the insert.)"""
    return service.ingest(session=session, batch=body, key=runtime.secrets.derive(USER_KEY),
                          principal=caller.principal, token_platform=caller.platform_id)


@router.post("/platforms/{isv}/{name}/usage-tokens", tags=["billing"], status_code=201)
def issue_usage_token(isv: str, name: str, session: SessionDep,
                      principal: AdminDep) -> UsageToken:
    return service.issue_usage_token(session=session, principal=principal, ref=f"{isv}/{name}")


@router.get("/platforms/{isv}/{name}/usage-tokens", tags=["billing"])
def list_usage_tokens(isv: str, name: str, session: SessionDep,
                      principal: AdminDep) -> list[UsageTokenInfo]:
    return service.list_usage_tokens(session=session, principal=principal, ref=f"{isv}/{name}")


@router.post("/platforms/{isv}/{name}/usage-tokens/{token_id}/revoke", tags=["billing"])
def revoke_usage_token(isv: str, name: str, token_id: Annotated[str, Path(max_length=64)],
                       session: SessionDep, principal: AdminDep) -> UsageTokenInfo:
    return service.revoke_usage_token(session=session, principal=principal,
                                      ref=f"{isv}/{name}", token_id=token_id)


@router.get("/plans", tags=["billing"])
def list_plans(session: SessionDep, principal: ViewerDep) -> list[PlanPublic]:
    return service.list_plans(session=session, principal=principal)


@router.post("/plans", tags=["billing"])
def apply_plan(document: PlanDocument, session: SessionDep,
               principal: ProviderAdminDep) -> PlanPublic:
    return service.apply_plan(session=session, principal=principal, document=document)


@router.post("/isvs/{isv}/subscriptions", tags=["billing"], status_code=201)
def create_subscription(isv: str, spec: SubscriptionCreate, session: SessionDep,
                        principal: ProviderAdminDep) -> SubscriptionPublic:
    return service.create_subscription(session=session, principal=principal, isv=isv, spec=spec)


@router.get("/subscriptions", tags=["billing"])
def list_subscriptions(session: SessionDep, principal: ViewerDep,
                       isv: str | None = None) -> list[SubscriptionPublic]:
    return service.list_subscriptions(session=session, principal=principal, isv=isv)


@router.post("/invoices/run", tags=["billing"])
def run_invoices(spec: InvoiceRun, session: SessionDep,
                 principal: ProviderAdminDep) -> list[InvoicePublic]:
    return service.run_invoices(session=session, principal=principal, period=spec.period)


@router.get("/invoices", tags=["billing"])
def list_invoices(session: SessionDep, principal: ViewerDep,
                  isv: str | None = None) -> list[InvoicePublic]:
    return service.list_invoices(session=session, principal=principal, isv=isv)


@router.get("/invoices/{invoice_id}", tags=["billing"])
def get_invoice(invoice_id: str, session: SessionDep, principal: ViewerDep) -> InvoicePublic:
    return service.get_invoice(session=session, principal=principal, invoice_id=invoice_id)


@router.get("/invoices/{invoice_id}/pdf", tags=["billing"],
            responses={200: {"content": {"application/pdf": {}}}})
def invoice_pdf(invoice_id: str, session: SessionDep, principal: ViewerDep) -> Response:
    invoice = service.get_invoice(session=session, principal=principal, invoice_id=invoice_id)
    return Response(pdf.render(invoice), media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{invoice.id}.pdf"'})


@router.get("/isvs/{isv}/projection", tags=["billing"])
def projection(isv: str, session: SessionDep, principal: ViewerDep,
               period: str | None = None) -> InvoicePublic:
    return service.projection(session=session, principal=principal, isv=isv, period=period)


@router.get("/isvs/{isv}/active-users", tags=["billing"],
            responses={200: {"content": {"text/csv": {}}}})
def active_users(isv: str, session: SessionDep, principal: ViewerDep,
                 period: Annotated[str, Query(description="YYYY-MM")]) -> Response:
    body = service.active_users_csv(session=session, principal=principal, isv=isv,
                                    period=period)
    return Response(body, media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{isv}-{period}-active-users.csv"'})


@router.get("/quote", tags=["billing"])
def quote(session: SessionDep, principal: ViewerDep, plan: str,
          users: Annotated[int, Query(ge=0, le=100_000_000)],
          term: str, platforms: Annotated[int, Query(ge=0, le=100_000)] = 1) -> Quote:
    return service.quote(session=session, principal=principal, plan=plan, users=users,
                         term=term, platforms=platforms)
