"""HTTP routes for users, roles, API tokens and one's own password and second factor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from tenantry.access import service
from tenantry.access.schemas import (
    LoginRequest,
    LoginToken,
    Me,
    PasswordChange,
    RecoveryCodes,
    RoleChange,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TotpConfirm,
    TotpSetup,
    UserCreate,
    UserCreated,
    UserPublic,
)
from tenantry.access.throttle import LOGINS
from tenantry.api.deps import AdminDep, AuthenticatedDep, Public, RuntimeDep, SessionDep
from tenantry.core.errors import NotAllowed

router = APIRouter(tags=["access"])
Username = Annotated[str, Path(max_length=40)]


@router.post("/auth/login", status_code=status.HTTP_201_CREATED, dependencies=[Public])
def login(spec: LoginRequest, session: SessionDep, request: Request) -> LoginToken:
    """Exchange a password (and code) for an 8-hour bearer token, as the portal does."""
    LOGINS.check(request.client.host if request.client else "unknown")
    principal = service.authenticate_password(session=session, username=spec.username,
                                              password=spec.password, code=spec.code)
    if service.setup_required(session=session, principal=principal):
        raise NotAllowed("finish your first login in the portal (new password, second factor)")
    token = service.issue_session_token(session=session, principal=principal)
    return LoginToken(token=token.get_secret_value())


@router.get("/me")
def me(principal: AuthenticatedDep) -> Me:
    """Who this token acts as."""
    return Me(username=principal.username, role=principal.role,
              platform_id=principal.platform_id)


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(spec: UserCreate, session: SessionDep, principal: AdminDep) -> UserCreated:
    """Create a user; the first password is returned once and must be changed at login."""
    return service.create_user(session=session, principal=principal, spec=spec)


@router.get("/users")
def list_users(session: SessionDep, principal: AdminDep) -> list[UserPublic]:
    return service.list_users(session=session, principal=principal)


@router.post("/users/{username}/disable")
def disable_user(username: Username, session: SessionDep,
                 principal: AdminDep) -> UserPublic:
    return service.disable_user(session=session, principal=principal, username=username)


@router.post("/users/{username}/role")
def set_role(username: Username, spec: RoleChange, session: SessionDep,
             principal: AdminDep) -> UserPublic:
    return service.set_role(session=session, principal=principal, username=username, spec=spec)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(spec: TokenCreate, session: SessionDep,
                 principal: AuthenticatedDep) -> TokenCreated:
    """Create an API token for yourself; its secret is shown once."""
    return service.create_token(session=session, principal=principal, spec=spec)


@router.get("/tokens")
def list_tokens(session: SessionDep, principal: AuthenticatedDep) -> list[TokenPublic]:
    return service.list_tokens(session=session, principal=principal)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: Annotated[str, Path(max_length=20)], session: SessionDep,
                 principal: AuthenticatedDep) -> TokenPublic:
    return service.revoke_token(session=session, principal=principal, token_id=token_id)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(spec: PasswordChange, session: SessionDep,
                    principal: AuthenticatedDep) -> None:
    service.change_password(session=session, principal=principal, spec=spec)


@router.post("/me/totp")
def start_totp(session: SessionDep, principal: AuthenticatedDep,
               runtime: RuntimeDep) -> TotpSetup:
    """Begin setting up a second factor: the seed for an authenticator app."""
    return service.start_totp(session=session, principal=principal, box=runtime.secrets)


@router.post("/me/totp/confirm")
def confirm_totp(spec: TotpConfirm, session: SessionDep, principal: AuthenticatedDep,
                 runtime: RuntimeDep) -> RecoveryCodes:
    """Prove the authenticator works; returns the recovery codes, once."""
    codes = service.confirm_totp(session=session, principal=principal, box=runtime.secrets,
                                 code=spec.code)
    return RecoveryCodes(codes=codes)
