"""People, roles, passwords, second factors and API tokens. The only place that commits.

Who may manage whom: a provider admin manages every user; an ISV admin manages the users of
its own ISV (ISV roles only). Nobody hands out a role above their own side: an ISV admin
never makes a provider user, and a token never carries more than its user's role.
"""

from __future__ import annotations

import datetime as dt
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import SecretStr
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload

from tenantry.access import totp
from tenantry.access.models import ApiToken, User
from tenantry.access.principal import ISV_ROLES, PROVIDER_ROLES, Principal, role_rank
from tenantry.access.schemas import (
    PasswordChange,
    RoleChange,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TotpSetup,
    UserCreate,
    UserCreated,
    UserPublic,
)
from tenantry.core.crypto import SecretBox, new_password, new_token, token_hash
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, InvalidInput, NotAllowed, NotFound, Unauthenticated
from tenantry.core.names import new_id
from tenantry.core.runtime import runtime_of
from tenantry.platforms.models import Isv

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)


def principal_of(user: User, *, scope_role: str | None = None,
                 platform_id: str | None = None) -> Principal:
    role = user.role
    if scope_role and scope_role != role and role_rank(scope_role) < role_rank(role):
        role = scope_role
    return Principal(user_id=user.id, username=user.username, role=role, isv_id=user.isv_id,
                     platform_id=platform_id)


def bootstrap_admin(*, session: Session) -> tuple[SecretStr, SecretStr] | None:
    """Make the first provider admin and a token for it; None when one exists already.

    Its password is generated and must be changed at the first portal login.
    """
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    password = new_password(18)
    user = User(id=new_id("u"), username="admin", role="provider-admin",
                password_hash=_hasher.hash(password.get_secret_value()),
                must_change_password=True)
    session.add(user)
    token = new_token("tnt")
    session.add(ApiToken(id=new_id("t"), user_id=user.id, name="bootstrap",
                         token_hash=token_hash(token.get_secret_value())))
    session.commit()
    return password, token


# ---------------------------------------------------------------- authentication

# token hash → (when checked, principal, token expiry). Every request checks its token; a
# few seconds of memory save the store a round trip each time. A revocation, a disabled
# user or a role change clears this process's memory at once; other processes see it
# within TOKEN_CACHE_SECONDS.
TOKEN_CACHE_SECONDS = 2.0
_token_cache: dict[str, tuple[float, Principal, dt.datetime | None]] = {}


def forget_tokens() -> None:
    _token_cache.clear()


def authenticate_token(*, session: Session, token: str) -> Principal:
    hashed = token_hash(token)
    now = utcnow()
    cached = _token_cache.get(hashed)
    if cached is not None:
        checked, principal, expires = cached
        if time.monotonic() - checked < TOKEN_CACHE_SECONDS and (expires is None
                                                                  or expires > now):
            return principal
    # One round trip: the token with its user.
    row = session.scalar(select(ApiToken).options(joinedload(ApiToken.user))
                         .where(ApiToken.token_hash == hashed))
    if (row is None or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at < now) or row.user.disabled):
        _token_cache.pop(hashed, None)
        raise Unauthenticated("the API token is unknown, expired or revoked")
    principal = principal_of(row.user, scope_role=row.scope_role, platform_id=row.platform_id)
    if len(_token_cache) > 10_000:
        _token_cache.clear()
    _token_cache[hashed] = (time.monotonic(), principal, row.expires_at)
    return principal


def authenticate_password(*, session: Session, username: str, password: str,
                          code: str | None = None) -> Principal:
    """Password, then the second factor when the user has one.

    After MAX_FAILURES wrong attempts the account is locked for LOCKOUT, whatever is sent;
    every answer is the same for an unknown user, a wrong password and a locked account, so
    the login form does not tell which usernames exist.
    """
    user = session.scalar(select(User).where(User.username == username).with_for_update())
    now = utcnow()
    refused = Unauthenticated("wrong username, password or code (or the account is locked)")
    if user is None or user.disabled:
        _hasher.hash(password or "x")  # the same cost as a real check
        raise refused
    if user.locked_until is not None and user.locked_until > now:
        raise refused
    try:
        _hasher.verify(user.password_hash, password)
        if user.totp_enabled and not _second_factor(session, user, code):
            raise VerificationError("second factor")
    except (VerificationError, InvalidHashError):  # a damaged hash refuses, never crashes
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        session.commit()
        raise refused from None
    user.failed_logins = 0
    user.locked_until = None
    session.commit()
    return principal_of(user)


def _second_factor(session: Session, user: User, code: str | None) -> bool:
    if not code or user.totp_secret is None:
        return False
    code = code.strip()
    if len(code) == totp.DIGITS and code.isdigit():
        return totp.verify(_totp_seed(session, user), code)
    hashed = totp.code_hash(code)
    if hashed in user.recovery_codes:  # a recovery code works once
        user.recovery_codes = [c for c in user.recovery_codes if c != hashed]
        return True
    return False


def _totp_seed(session: Session, user: User) -> str:
    """TOTP seeds are stored encrypted, with the process's secret box."""
    assert user.totp_secret is not None
    return runtime_of(session).secrets.decrypt(user.totp_secret).get_secret_value()


def setup_required(*, session: Session, principal: Principal) -> list[str]:
    """What a person must do before using the portal: change password, enroll TOTP."""
    user = session.get(User, principal.user_id)
    if user is None:
        return []
    todo = []
    if user.must_change_password:
        todo.append("password")
    if user.role in PROVIDER_ROLES and not user.totp_enabled:
        todo.append("totp")
    return todo


def issue_session_token(*, session: Session, principal: Principal,
                        ttl: dt.timedelta = dt.timedelta(hours=8)) -> SecretStr:
    token = new_token("tns")
    session.add(ApiToken(id=new_id("t"), user_id=principal.user_id, name="portal session",
                         token_hash=token_hash(token.get_secret_value()),
                         expires_at=utcnow() + ttl))
    session.commit()
    return token


def revoke_session_token(*, session: Session, token: str) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    if row is not None:
        row.revoked_at = utcnow()
        session.commit()
    forget_tokens()


def change_password(*, session: Session, principal: Principal, spec: PasswordChange) -> None:
    user = _me(session, principal)
    try:
        _hasher.verify(user.password_hash, spec.current)
    except (VerificationError, InvalidHashError):
        raise InvalidInput("the current password is wrong", field="current") from None
    if spec.new == spec.current:
        raise InvalidInput("the new password must differ from the current one", field="new")
    user.password_hash = _hasher.hash(spec.new)
    user.must_change_password = False
    session.commit()


def start_totp(*, session: Session, principal: Principal, box: SecretBox) -> TotpSetup:
    user = _me(session, principal)
    if user.totp_enabled:
        raise Conflict("a second factor is set up already", field="totp")
    secret = totp.new_secret()
    user.totp_secret = box.encrypt(secret)
    session.commit()
    return TotpSetup(secret=secret, uri=totp.provisioning_uri(secret, username=user.username))


def pending_totp(*, session: Session, principal: Principal, box: SecretBox) -> TotpSetup:
    """The seed being set up (made on first ask), for the set-up page to show."""
    user = _me(session, principal)
    if user.totp_secret is None:
        return start_totp(session=session, principal=principal, box=box)
    secret = box.decrypt(user.totp_secret).get_secret_value()
    return TotpSetup(secret=secret, uri=totp.provisioning_uri(secret, username=user.username))


def user_public_of(*, session: Session, principal: Principal) -> UserPublic:
    return user_public(_me(session, principal), _isv_names(session))


def confirm_totp(*, session: Session, principal: Principal, box: SecretBox,
                 code: str) -> list[str]:
    """Turn the second factor on once a code proves the authenticator has the seed."""
    user = _me(session, principal)
    if user.totp_secret is None:
        raise Conflict("start the set-up first", field="code")
    if user.totp_enabled:
        raise Conflict("a second factor is set up already", field="code")
    if not totp.verify(box.decrypt(user.totp_secret).get_secret_value(), code):
        raise InvalidInput("that code is not right; check the authenticator's clock",
                           field="code")
    codes = totp.recovery_codes()
    user.recovery_codes = [totp.code_hash(c) for c in codes]
    user.totp_enabled = True
    session.commit()
    return codes


def _me(session: Session, principal: Principal) -> User:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("no such user")
    return user


# ---------------------------------------------------------------- users

def user_public(user: User, isvs: dict[str, str]) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, role=user.role,
                      isv=isvs.get(user.isv_id or ""), disabled=user.disabled,
                      totp_enabled=user.totp_enabled,
                      must_change_password=user.must_change_password,
                      created_at=user.created_at)


def _isv_names(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Isv.id, Isv.name)).tuples().all())


def _managed_users(principal: Principal) -> Select[User]:
    """Who an admin manages: everyone (provider admin) or their own ISV's users."""
    principal.require("admin")
    query = select(User)
    if not principal.is_provider:
        query = query.where(User.isv_id == principal.isv_id)
    return query


def create_user(*, session: Session, principal: Principal, spec: UserCreate) -> UserCreated:
    principal.require("admin")
    if spec.role in PROVIDER_ROLES:
        if not principal.is_provider:
            raise NotAllowed("only a provider admin may create provider users")
        if spec.isv is not None:
            raise InvalidInput("provider users belong to no ISV", field="isv")
        isv_id = None
    else:
        if spec.isv is None:
            if principal.is_provider:
                raise InvalidInput("an ISV role needs --isv", field="isv")
            isv_id = principal.isv_id
        else:
            isv = session.scalar(select(Isv).where(Isv.name == spec.isv))
            if isv is None or (not principal.is_provider and isv.id != principal.isv_id):
                raise NotFound(f"no ISV named {spec.isv!r}", field="isv")
            isv_id = isv.id
    if session.scalar(select(User.id).where(User.username == spec.username)):
        raise Conflict(f"user {spec.username!r} exists already", field="username")
    password = new_password(15)
    user = User(id=new_id("u"), username=spec.username, role=spec.role, isv_id=isv_id,
                password_hash=_hasher.hash(password.get_secret_value()),
                must_change_password=True)
    session.add(user)
    session.commit()
    return UserCreated(user=user_public(user, _isv_names(session)),
                       password=password.get_secret_value())


def list_users(*, session: Session, principal: Principal) -> list[UserPublic]:
    query = _managed_users(principal)
    isvs = _isv_names(session)
    return [user_public(u, isvs)
            for u in session.scalars(query.order_by(User.username))]


def _managed_user(session: Session, principal: Principal, username: str) -> User:
    query = _managed_users(principal)
    user = session.scalar(query.where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}", field="username")
    if user.id == principal.user_id:
        raise NotAllowed("you may not change your own role or disable yourself")
    return user


def disable_user(*, session: Session, principal: Principal, username: str) -> UserPublic:
    user = _managed_user(session, principal, username)
    user.disabled = True
    forget_tokens()
    for token in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id,
                                                        ApiToken.revoked_at.is_(None))):
        token.revoked_at = utcnow()
    session.commit()
    return user_public(user, _isv_names(session))


def set_role(*, session: Session, principal: Principal, username: str,
             spec: RoleChange) -> UserPublic:
    user = _managed_user(session, principal, username)
    same_side = ({user.role, spec.role} <= PROVIDER_ROLES) or ({user.role, spec.role} <= ISV_ROLES)
    if not same_side:
        raise InvalidInput("a user stays on their side: provider roles or ISV roles",
                           field="role")
    user.role = spec.role
    session.commit()
    forget_tokens()
    return user_public(user, _isv_names(session))


# ---------------------------------------------------------------- API tokens

def token_public(row: ApiToken) -> TokenPublic:
    return TokenPublic(id=row.id, name=row.name, username=row.user.username,
                       role=row.scope_role or row.user.role, platform_id=row.platform_id,
                       expires_at=row.expires_at, revoked_at=row.revoked_at,
                       last_used_at=row.last_used_at, created_at=row.created_at)


def create_token(*, session: Session, principal: Principal, spec: TokenCreate) -> TokenCreated:
    """A token for the caller, at most the caller's role, optionally for one platform."""
    user = _me(session, principal)
    if principal.platform_id is not None:
        raise NotAllowed("a platform-scoped token may not make tokens")
    role = spec.role or user.role
    same_side = (role in PROVIDER_ROLES) == (user.role in PROVIDER_ROLES)
    if not same_side or role_rank(role) > role_rank(user.role):
        raise NotAllowed(f"a token may not carry more than your role ({user.role})")
    platform_id = None
    if spec.platform is not None:
        from tenantry.platforms.service import get_platform

        platform_id = get_platform(session, principal, spec.platform).id
    secret = new_token("tnt")
    row = ApiToken(id=new_id("t"), user_id=user.id, name=spec.name,
                   token_hash=token_hash(secret.get_secret_value()), scope_role=role,
                   platform_id=platform_id,
                   expires_at=utcnow() + dt.timedelta(days=spec.expires_days))
    row.user = user
    session.add(row)
    session.commit()
    return TokenCreated(token=token_public(row), secret=secret.get_secret_value())


def list_tokens(*, session: Session, principal: Principal) -> list[TokenPublic]:
    """Your own tokens; an admin also sees those of the users they manage."""
    query = select(ApiToken).join(User).where(ApiToken.name != "portal session")
    if principal.role.endswith("-admin") and principal.platform_id is None:
        if not principal.is_provider:
            query = query.where(User.isv_id == principal.isv_id)
    else:
        query = query.where(ApiToken.user_id == principal.user_id)
    return [token_public(t) for t in session.scalars(query.order_by(ApiToken.created_at))]


def revoke_token(*, session: Session, principal: Principal, token_id: str) -> TokenPublic:
    visible = {t.id for t in list_tokens(session=session, principal=principal)}
    row = session.get(ApiToken, token_id)
    if row is None or token_id not in visible:
        raise NotFound(f"no token {token_id!r}", field="token")
    row.revoked_at = row.revoked_at or utcnow()
    session.commit()
    forget_tokens()
    return token_public(row)
