"""What goes in and out of the monitoring API (and so the CLI's --json)."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

EMAIL_RE = re.compile(r"^[^@\s,;<>\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
Hours = Literal["always", "business"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # an ISV, host or region
PLATFORM = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"  # ISV/NAME or an id
CHECK = r"^[a-z][a-z0-9_]*$"
TEXT = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"  # no control characters but tab and newline
Level = Literal["ok", "busy", "overloaded", "unknown"]


class CheckPublic(BaseModel):
    name: str
    kind: str  # host | platform | database
    summary: str
    unit: str
    higher_is_worse: bool
    busy: float | None
    overloaded: float
    clear: float
    hold_seconds: int
    overrides: int  # how many threshold overrides the caller may see


class ThresholdSet(BaseModel):
    """`threshold set CHECK --busy X --overloaded Y [--isv I | --host H | --platform P]`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    check: str = Field(min_length=1, max_length=40, pattern=CHECK)
    busy: float | None = None
    overloaded: float
    clear: float | None = None
    isv: str | None = Field(default=None, min_length=1, max_length=40, pattern=NAME)
    host: str | None = Field(default=None, min_length=1, max_length=40, pattern=NAME)
    platform: str | None = Field(default=None, min_length=1, max_length=81, pattern=PLATFORM)

    @field_validator("busy", "overloaded", "clear", mode="before")
    @classmethod
    def _number(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _one_scope(self) -> ThresholdSet:
        given = [n for n in ("isv", "host", "platform") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of isv, host or platform")
        return self

    @property
    def scope(self) -> tuple[str, str]:
        for name in ("platform", "host", "isv"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated")


class ThresholdPublic(BaseModel):
    check: str
    scope: str
    target: str
    busy: float | None
    overloaded: float
    clear: float
    set_by: str
    updated_at: dt.datetime


class ContactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]+$")
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=16)
    isv: str | None = Field(default=None, min_length=1, max_length=40, pattern=NAME,
                            description="the ISV whose alerts this contact gets; none: NOC")
    hours: Hours = "always"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not EMAIL_RE.fullmatch(v):
            raise ValueError("must be an email address like ops@example.com")
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not PHONE_RE.fullmatch(v):
            raise ValueError("must be an international number like +41791234567")
        return v

    @model_validator(mode="after")
    def _reachable(self) -> ContactCreate:
        if self.email is None and self.phone is None:
            raise ValueError("give an email address, a phone number or both")
        return self


class ContactPublic(BaseModel):
    id: str
    name: str
    isv: str | None  # None: the provider's NOC
    email: str | None
    phone: str | None
    hours: Hours
    created_at: dt.datetime


class NotificationPublic(BaseModel):
    channel: str
    recipient: str
    state: str  # the alert state it tells: firing, resolved, flapping, stable
    status: str  # pending, sent, failed, expired, suppressed
    attempts: int
    sent_at: dt.datetime | None
    last_error: str | None


class AlertChangePublic(BaseModel):
    state: str
    at: dt.datetime
    value: float | None
    note: str | None


class AlertPublic(BaseModel):
    id: int
    check: str
    level: str
    kind: str
    target: str
    host: str | None
    region: str | None
    isv: str | None
    platform: str | None  # ISV/NAME
    summary: str
    value: float | None
    threshold: float | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    silenced_by: str | None  # the maintenance window
    suppressed: str | None
    changes: list[AlertChangePublic] = []
    notifications: list[NotificationPublic] = []


class MaintenanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    region: str | None = Field(default=None, min_length=1, max_length=40, pattern=NAME)
    host: str | None = Field(default=None, min_length=1, max_length=40, pattern=NAME)
    platform: str | None = Field(default=None, min_length=1, max_length=81, pattern=PLATFORM)
    starts_at: AwareDatetime = Field(alias="from")
    ends_at: AwareDatetime = Field(alias="to")
    message: str = Field(min_length=3, max_length=1000, pattern=TEXT)

    @model_validator(mode="after")
    def _valid(self) -> MaintenanceCreate:
        given = [n for n in ("region", "host", "platform") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of region, host or platform")
        return self

    @property
    def scope(self) -> tuple[str, str]:
        for name in ("platform", "host", "region"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated")


class MaintenancePublic(BaseModel):
    id: str
    scope: str
    target: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    message: str
    created_by: str
    created_at: dt.datetime
    silence_id: str | None
    active: bool


class CheckState(BaseModel):
    check: str
    level: Level
    value: float | None = None
    since: dt.datetime | None = None  # the last change
    alert_id: int | None = None


class PlatformNode(BaseModel):
    name: str  # ISV/NAME
    id: str
    level: Level
    checks: list[CheckState]


class HostNode(BaseModel):
    name: str
    state: str  # online | offline
    level: Level
    checks: list[CheckState]
    platforms: list[PlatformNode]


class RegionNode(BaseModel):
    name: str
    level: Level
    matrix: dict[str, Level]  # Network, Compute, Storage
    hosts: list[HostNode]


class StatusPublic(BaseModel):
    at: dt.datetime
    regions: list[RegionNode]
    maintenance: list[MaintenancePublic]
