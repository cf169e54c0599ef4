"""Users, passwords and API tokens (the bootstrap admin is made on first start)."""

from __future__ import annotations

import datetime as dt

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenantry.access.models import ApiToken, User
from tenantry.access.principal import Principal
from tenantry.core.crypto import new_password, new_token, token_hash
from tenantry.core.db import utcnow
from tenantry.core.errors import NotAllowed
from tenantry.core.names import new_id

_hasher = PasswordHasher()


def principal_of(user: User) -> Principal:
    return Principal(user_id=user.id, username=user.username, role=user.role, isv_id=user.isv_id)


def bootstrap_admin(*, session: Session) -> tuple[SecretStr, SecretStr] | None:
    """Make the first provider admin and a token for it; None when one exists already."""
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    password = new_password(18)
    user = User(id=new_id("u"), username="admin", role="provider-admin",
                password_hash=_hasher.hash(password.get_secret_value()))
    session.add(user)
    token = new_token("tnt")
    session.add(ApiToken(id=new_id("t"), user_id=user.id, name="bootstrap",
                         token_hash=token_hash(token.get_secret_value())))
    session.commit()
    return password, token


def authenticate_token(*, session: Session, token: str) -> Principal:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    now = utcnow()
    if (row is None or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at < now) or row.user.disabled):
        raise NotAllowed("the API token is unknown, expired or revoked")
    return principal_of(row.user)


def authenticate_password(*, session: Session, username: str, password: str) -> Principal:
    user = session.scalar(select(User).where(User.username == username))
    try:
        if user is None or user.disabled:
            raise VerificationError("unknown user")
        _hasher.verify(user.password_hash, password)
    except VerificationError:
        raise NotAllowed("wrong username or password") from None
    return principal_of(user)


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
