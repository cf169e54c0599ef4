"""What goes in and out of the access use cases."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantry.core.names import check_name

Role = Literal["provider-admin", "provider-operator", "isv-admin", "isv-operator", "isv-viewer"]
_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,39}$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserCreate(_In):
    username: str = Field(max_length=40)
    role: Role
    isv: str | None = Field(default=None, max_length=40)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not _USERNAME.fullmatch(value):
            raise ValueError("2-40 of a-z, 0-9, '.', '_' and '-', starting with a letter")
        return value

    @field_validator("isv")
    @classmethod
    def _isv(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, field="isv")


class RoleChange(_In):
    role: Role


class UserPublic(BaseModel):
    id: str
    username: str
    role: str
    isv: str | None
    disabled: bool
    totp_enabled: bool
    must_change_password: bool
    created_at: dt.datetime


class UserCreated(BaseModel):
    """The new user, and its first password: shown once, to be changed at first login."""

    user: UserPublic
    password: str


class TokenCreate(_In):
    name: str = Field(min_length=1, max_length=80)
    role: Role | None = None
    platform: str | None = Field(default=None, max_length=90, description="ISV/NAME or id")
    expires_days: int = Field(default=90, ge=1, le=365)


class TokenPublic(BaseModel):
    id: str
    name: str
    username: str
    role: str
    platform_id: str | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    created_at: dt.datetime


class TokenCreated(BaseModel):
    """The token's secret is shown once; only its hash is kept."""

    token: TokenPublic
    secret: str


class PasswordChange(_In):
    current: str = Field(max_length=200)
    new: str = Field(min_length=12, max_length=200)


class TotpSetup(BaseModel):
    secret: str
    uri: str


class TotpConfirm(_In):
    code: str = Field(pattern=r"^\d{6}$")


class RecoveryCodes(BaseModel):
    codes: list[str]


class LoginRequest(_In):
    username: str = Field(max_length=40)
    password: str = Field(max_length=200)
    code: str | None = Field(default=None, max_length=20)


class LoginToken(BaseModel):
    token: str


class Me(BaseModel):
    username: str
    role: str
    platform_id: str | None
