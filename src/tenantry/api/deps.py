"""Shared FastAPI dependencies: the runtime, a session per request, and who is asking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tenantry.access.principal import Principal
from tenantry.access.service import authenticate_token
from tenantry.core.errors import Unauthenticated
from tenantry.core.runtime import Runtime

SESSION_COOKIE = "tenantry_session"


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: a plain attribute read should not cost a thread-pool hop."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


def get_principal(request: Request, session: SessionDep) -> Principal:
    """Bearer tokens only: the portal's cookie never authorises the API (no CSRF there)."""
    token = bearer_token(request)
    if not token:
        raise Unauthenticated("an API token is required (Authorization: Bearer ...)")
    return authenticate_token(session=session, token=token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
