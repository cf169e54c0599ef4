"""Shared FastAPI dependencies: the runtime, a session per request, and who is asking.

Every route declares the permission it needs, by what it asks for:

    @router.post("/isvs/{isv}/platforms", status_code=202)
    def create_platform(isv: str, spec: PlatformCreate, session: SessionDep,
                        principal: OperatorDep) -> PlatformAccepted:

`OperatorDep` authenticates the bearer token and refuses (403) a role that may not
`operate` at all. Which rows the caller may touch is still decided once, in the services'
query layer (`scoped`): another ISV's platform simply does not exist for them (404).
Routes open to anyone say so with `dependencies=[Public]`; the agents' routes take a host
(`HostIdDep`, declared "agent"). `route_permissions(app)` lists every route with its
declaration, for tests, docs/permissions.md and the `x-permission` of each OpenAPI operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session
from starlette.routing import Mount

from tenantry.access.principal import Principal
from tenantry.access.service import authenticate_token
from tenantry.core.errors import Unauthenticated
from tenantry.core.runtime import Runtime

SESSION_COOKIE = "tenantry_session"
ACTIONS = ("view", "operate", "admin", "provider")  # what Principal.require knows
PUBLIC = "public"  # no credential at all
AGENT = "agent"  # a host agent's token, never a person's
MONITOR = "monitoring-stack"  # the token `up` gave Prometheus or Alertmanager, never a person's
AUTHENTICATED = "authenticated"  # any person; the service acts on their own account

F = TypeVar("F", bound=Callable[..., Any])
_DECLARED: dict[Callable[..., Any], str] = {}


def declares(permission: str) -> Callable[[F], F]:
    """Mark a dependency as the one that enforces `permission` on the routes using it."""
    def register(call: F) -> F:
        _DECLARED[call] = permission
        return call
    return register


def permission_of(actions: tuple[str, ...]) -> str:
    """The declared name of a set of actions: "operate", "provider+admin", "authenticated"."""
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise ValueError(f"unknown actions {unknown}: choose from {ACTIONS}")
    return "+".join(actions) or AUTHENTICATED


async def get_runtime(request: Request) -> Runtime:
    """Async on purpose: a plain attribute read should not cost a thread-pool hop."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def release_connection(session: Session) -> None:
    """End `session`'s transaction (its objects stay loaded), so that its connection goes
    back to the pool between the request's hops through the thread pool.

    Every dependency and sync route runs on a thread of its own: a request that kept a
    connection while it queued for its next thread, under a burst larger than the thread
    pool, left every connection held by a queued request and every thread waiting for a
    connection, until the pool's timeout failed them all. Authentication calls this as
    it returns."""
    session.commit()


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
    principal = authenticate_token(session=session, token=token)
    release_connection(session)
    return principal


# Authenticates but declares nothing: a route whose only principal is this one fails
# tests/api/test_permissions_declared.py. Take one of the declared aliases below instead.
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def requires(*actions: str) -> Callable[..., Principal]:
    """A dependency: the caller, refused (403) unless their role may do all of `actions`.

    No actions: any authenticated person (their own account, their own tokens).
    """
    permission = permission_of(actions)

    def allowed(principal: PrincipalDep) -> Principal:
        for action in actions:
            principal.require(action)
        return principal

    allowed.__name__ = f"requires_{permission.replace('+', '_')}"
    return declares(permission)(allowed)


ViewerDep = Annotated[Principal, Depends(requires("view"))]
OperatorDep = Annotated[Principal, Depends(requires("operate"))]
AdminDep = Annotated[Principal, Depends(requires("admin"))]
ProviderDep = Annotated[Principal, Depends(requires("provider"))]
ProviderAdminDep = Annotated[Principal, Depends(requires("provider", "admin"))]
AuthenticatedDep = Annotated[Principal, Depends(requires())]


@declares(PUBLIC)
def public() -> None:
    """Checks nothing: it only states that the route is open to anyone."""


Public = Depends(public)


@dataclass(frozen=True, order=True)
class RoutePermission:
    path: str
    method: str
    declared: tuple[str, ...]  # exactly one when the route is right

    @property
    def permission(self) -> str | None:
        return self.declared[0] if len(self.declared) == 1 else None


def _declared_in(dependant: Any) -> Iterator[str]:
    for sub in dependant.dependencies:
        if sub.call in _DECLARED:
            yield _DECLARED[sub.call]
        yield from _declared_in(sub)


def route_permissions(app: FastAPI) -> list[RoutePermission]:
    """Every route of `app` (API and portal) with the permission it declares.

    FastAPI's own pages (the OpenAPI document, Swagger UI) and the static files serve no
    data and are public by construction; any other route that declares nothing gets
    `declared=()`.
    """
    framework = {app.openapi_url, app.docs_url, app.redoc_url,
                 app.swagger_ui_oauth2_redirect_url} - {None}
    found = []
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path or ""
        if isinstance(route, APIRoute):
            declared = tuple(sorted(set(_declared_in(context.dependant))))
            found += [RoutePermission(path, m, declared) for m in route.methods or ()]
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            found.append(RoutePermission(f"{route.path}/{{path}}", "GET", (PUBLIC,)))
        else:
            declared = (PUBLIC,) if path in framework else ()
            found += [RoutePermission(path, m, declared)
                      for m in (context.methods or {"GET"}) - {"HEAD"}]
    return sorted(found)


def document_permissions(app: FastAPI) -> None:
    """Show each operation's declared permission in the OpenAPI document (`x-permission`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        for route in route_permissions(app):
            operation = schema["paths"].get(route.path, {}).get(route.method.lower())
            if operation is not None and route.permission is not None:
                operation["x-permission"] = route.permission
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
